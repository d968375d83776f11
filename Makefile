# tether: build and test entry points. `make test` is what CI runs.
GO        ?= go
GOFLAGS   ?=
PKGS      := ./...
BIN       := bin/tether
# The load tool is its own module, so that its plotting libraries stay out of
# the sidecar's go.mod and binary.
BENCH_MOD := cmd/tether-bench
BENCH_BIN := bin/tether-bench
VERSION   ?= 0.1.0

.PHONY: all build bench-build test vet unit e2e chart bench-lite bench-compare fuzz-smoke run clean jaeger soak drain-test
.PHONY: image image-test

all: build

build:
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/tether

## bench-build: the load tool, bin/tether-bench (next to bin/tether, which it runs without --url)
bench-build:
	cd $(BENCH_MOD) && $(GO) build -trimpath -o $(CURDIR)/$(BENCH_BIN) .

run:
	$(GO) run ./cmd/tether serve

## test: everything CI checks (vet, unit tests with -race, e2e against the real binary, chart rendering, benchmarks compile and run)
test: vet unit e2e chart bench-lite image-test

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)
	cd $(BENCH_MOD) && $(GO) vet ./...
	cd e2e && $(GO) vet ./...
	cd charts/test && $(GO) vet ./...
	cd $(IMAGE_MOD) && $(GO) vet ./...

unit:
	$(GO) test -race -count=1 $(PKGS)
	$(GO) test -race -count=1 -tags tetherfaults ./proxy
	cd $(BENCH_MOD) && $(GO) test -race -count=1 ./...

e2e: jaeger
	cd e2e && TETHER_JAEGER=$(CURDIR)/e2e/tools/bin/jaeger $(GO) test -race -count=1 -timeout 20m ./...

## jaeger: build Jaeger v2 from its Go module for the tracing e2e test (minutes the first time, cached after)
jaeger: e2e/tools/bin/jaeger

e2e/tools/bin/jaeger: e2e/tools/jaeger/go.mod
	cd e2e/tools/jaeger && $(GO) build -o ../bin/jaeger github.com/jaegertracing/jaeger/cmd/jaeger

chart:
	cd charts/test && $(GO) test -count=1 ./...

## bench-lite: every benchmark runs a few iterations so it keeps compiling and working
bench-lite:
	$(GO) test -run '^$$' -bench . -benchtime 100x $(PKGS)
	cd $(BENCH_MOD) && $(GO) test -run '^$$' -bench . -benchtime 100x ./...

# The image builder is its own module too (go-containerregistry stays out of
# the sidecar's go.mod); it needs no Docker engine and pulls no base image.
IMAGE_MOD := build/image

## image: the OCI image, no Docker engine: bin/image (OCI layout, one index of linux/amd64 and linux/arm64) and bin/tether-image.tar (docker load / podman load: the host's platform; IMAGE_ARGS=-tarball-platform=linux/amd64 to choose)
image:
	cd $(IMAGE_MOD) && $(GO) run . -root $(CURDIR) -version $(VERSION) $(IMAGE_ARGS)

## image-test: builds the image twice (same digests), unpacks the layers, checks the config and files, runs the binary
image-test:
	cd $(IMAGE_MOD) && $(GO) test -count=1 -timeout 20m ./...

SOAK_SESSIONS ?= 2000

## soak: the fault soak alone, figures printed (make soak SOAK_SESSIONS=20000 for a longer one)
soak:
	cd e2e && $(GO) test -count=1 -timeout 90m -v -run '^TestSoakFaults$$' . -soak.sessions=$(SOAK_SESSIONS)

## drain-test: the turn-aware drain tests alone, timings printed
drain-test:
	cd e2e && $(GO) test -count=1 -timeout 10m -v -run '^TestDrain' .

## browser-test: the headless Chromium test alone (needs chromium: apt-get install chromium), timings printed
.PHONY: browser-test
browser-test:
	cd e2e && $(GO) test -count=1 -timeout 5m -v -run '^TestBrowserRealtime$$' .

## dashboard-test: the Grafana dashboard and alert rules against a real Prometheus (needs prometheus: apt-get install prometheus)
.PHONY: dashboard-test
dashboard-test:
	cd charts/test && $(GO) test -count=1 -v -run '^TestAlertRules' .
	cd e2e && $(GO) test -count=1 -timeout 5m -v -run '^TestPrometheusDashboard$$' .

## bench-compare: direct vs nginx vs tether under the same voice load (installs nginx from Debian if absent)
bench-compare: build bench-build
	TETHER=$(BIN) TETHER_BENCH=$(BENCH_BIN) bash $(BENCH_MOD)/compare.sh $(BENCH_ARGS)

## fuzz-smoke: a short run of each fuzz target
fuzz-smoke:
	$(GO) test -run '^$$' -fuzz FuzzPeeker -fuzztime 20s ./proxy
	$(GO) test -run '^$$' -fuzz FuzzFrameHeader -fuzztime 20s ./proxy
	$(GO) test -run '^$$' -fuzz FuzzPeekerFastPath -fuzztime 20s ./proxy
	$(GO) test -run '^$$' -fuzz FuzzCredential -fuzztime 10s ./auth
	$(GO) test -run '^$$' -fuzz FuzzVerifyHS256 -fuzztime 10s ./auth
	$(GO) test -run '^$$' -fuzz FuzzLoad -fuzztime 20s ./config

clean:
	rm -rf bin
