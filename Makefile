# sipedge — the two commands a newcomer needs are `make run` and `make test`.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)

.PHONY: run build test test-short lint fuzz test-fuzz bench bench-acl bench-sip bench-peer bench-propagation clean

## run: start sipedge on the embedded store with the defaults it prints
run:
	$(GO) run -ldflags "$(LDFLAGS)" ./cmd/sipedge $(ARGS)

## build: static binary in bin/sipedge
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/sipedge ./cmd/sipedge

## test: everything — installs redis-server/sipp/staticcheck if missing, lint, race, integration, e2e
test:
	bash scripts/test.sh

## test-short: unit tests only (no Redis, no SIPp)
test-short:
	$(GO) test -short ./...

## lint: gofmt, go vet, staticcheck
lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	$$($(GO) env GOPATH)/bin/staticcheck ./...

## fuzz: every fuzz target for a bounded time (FUZZTIME, default 20s each)
FUZZTIME ?= 20s
fuzz test-fuzz:
	bash scripts/fuzz.sh $(FUZZTIME)

## bench: matcher benchmarks, then the SIP ladder
bench: bench-acl bench-sip

bench-acl:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime=2s ./acl/

bench-sip:
	bash scripts/bench-sip.sh

## bench-peer: sipedge vs Kamailio side by side on the SIPp ladder (root; installs kamailio, sip-tester,
## tcpdump) → bench/results/peer-<date>.md/.svg/.tsv; ~30 min, QUICK=1 for a ~10 min smoke run
bench-peer:
	bash bench/peer/bench-peer.sh

clean:
	rm -rf bin sipedge-data

## bench-propagation: 3 nodes on a throwaway Redis, 1,000 writes → every node serves (p50/p99/max)
bench-propagation:
	bash scripts/with-redis.sh env SIPEDGE_BENCH_PROPAGATION=1 $(GO) test -run TestPropagationBench -v -count=1 -timeout 10m ./store/
