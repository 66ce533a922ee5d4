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
    CGO_ENABLED=0 go build -trimpath -o /out/objectsource ./objectsource

FROM gcr.io/distroless/static-debian12:nonroot AS objectsource
COPY --from=build /out/objectsource /objectsource
USER nonroot:nonroot
EXPOSE 9010
ENTRYPOINT ["/objectsource"]

FROM gcr.io/distroless/static-debian12:nonroot AS callback
COPY --from=build /out/callback /callback
USER nonroot:nonroot
# The intake log: give each replica a volume of its own here.
VOLUME ["/var/lib/callback/wal"]
ENV WAL_DIR=/var/lib/callback/wal
EXPOSE 9090
ENTRYPOINT ["/callback"]
