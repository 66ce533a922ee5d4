# Multi-stage build of the service and of the simulator, static binaries on a
# minimal non-root image.
#
#   docker build -t callback .                         # the service
#   docker build --target objectsource -t objectsource .
#
# docker-compose.yml's "full" profile builds both.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static binaries (no cgo) that run on a distroless image; -trimpath keeps
# paths of this machine out of them.
RUN CGO_ENABLED=0 go build -trimpath -o /out/callback . && \
    CGO_ENABLED=0 go build -trimpath -o /out/objectsource ./objectsource && \
    mkdir -p /out/wal

FROM gcr.io/distroless/static-debian12:nonroot AS objectsource
COPY --from=build /out/objectsource /objectsource
USER nonroot:nonroot
EXPOSE 9010
ENTRYPOINT ["/objectsource"]

FROM gcr.io/distroless/static-debian12:nonroot AS callback
COPY --from=build /out/callback /callback
# The intake log's directory, owned by the user the service runs as, laid
# down before VOLUME declares it: Docker seeds a new named volume from it.
# Left to Docker, the path would be created root-owned and the service, as
# nonroot, could not lock its log there (container_test.go).
COPY --from=build --chown=nonroot:nonroot /out/wal /var/lib/callback/wal
USER nonroot:nonroot
# All interfaces: probes and Services connect to the pod's or container's
# address, never to its localhost (the binary's own default). The service
# writes nothing but the log, so the root filesystem can be read-only.
ENV WAL_DIR=/var/lib/callback/wal ADDR=:9090
# The intake log: give each replica a volume of its own here.
VOLUME ["/var/lib/callback/wal"]
EXPOSE 9090
ENTRYPOINT ["/callback"]
