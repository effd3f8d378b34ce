# ringvpn — run `make help` for the targets.
GO      ?= go
BIN     := bin/ringvpn
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
PKGS    := ./...

.PHONY: help deps build test race bench-smoke bench fuzz lint demo ring-demo clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

deps: ## download Go modules (a fresh machine needs nothing else yet)
	$(GO) mod download

build: deps ## build bin/ringvpn
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/ringvpn

test: deps ## everything CI runs: vet, race-enabled tests, benchmarks once, a short fuzz pass
	$(GO) vet $(PKGS)
	$(GO) test -race -timeout 10m $(PKGS)
	$(MAKE) --no-print-directory bench-smoke

race: deps ## race-enabled tests only
	$(GO) test -race -timeout 10m $(PKGS)

bench-smoke: ## run every benchmark once (catches broken benchmarks, not speed)
	$(GO) test -run='^$$' -bench=. -benchtime=1x $(PKGS) > /dev/null

bench: build ## the performance report: ratios measured in one run
	scripts/bench.sh

FUZZTIME ?= 10s
fuzz: ## run every fuzz target for FUZZTIME (default 10s; the closing bar is 60s)
	scripts/fuzz.sh $(FUZZTIME)

lint: ## gofmt, go vet, staticcheck (pinned in go.mod), go mod tidy -diff
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt: run gofmt -w'; exit 1; }
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)
	$(GO) mod tidy -diff

demo: build ## the VPN demo: members in network namespaces ping and send a file (root)
	scripts/demo.sh

ring-demo: build ## the ring alone: members on loopback, no root needed
	scripts/ring-demo.sh

clean: ## remove build output
	rm -rf bin
