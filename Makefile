# Shortcuts; every target is also a plain command in README.md.
.PHONY: run test build up lint

# PostgreSQL, the simulator and the service together, without Docker. Ctrl-C stops all.
run:
	scripts/dev.sh

# The test suite. It starts its own throwaway PostgreSQL (or uses TEST_DATABASE_URL).
test:
	go test -race -count=1 -timeout 20m ./...

build:
	go build -o callback .
	go build -o objectsource/objectsource ./objectsource

# PostgreSQL in Docker, for the `go run .` route.
up:
	docker compose up -d --wait

lint:
	test -z "$$(gofmt -l .)"
	go vet ./...
