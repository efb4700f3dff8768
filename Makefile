# GoBalancer. `make run` and `make test` work on a fresh machine: they fetch the pinned
# Node.js 24 from the npm registry (toolchain/) and run on it, whatever Node the machine has.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
export PATH := $(CURDIR)/toolchain/node_modules/.bin:$(CURDIR)/node_modules/.bin:$(PATH)
export npm_config_update_notifier := false

NODE_STAMP := toolchain/node_modules/.installed
DEPS_STAMP := node_modules/.installed
SOURCES := $(shell find src -name '*.ts' ! -name '*.test.ts') tsconfig.json tsconfig.build.json

.PHONY: run test build typecheck reference fuzz bench bench-peers bench-replicas soak deps clean

## run: build, start three demo backends on 127.0.0.1:9001-9003 and GoBalancer on :8080
run: build
	@node demo/backends.ts & demo=$$!; \
	trap 'kill $$demo 2>/dev/null || true' EXIT; \
	echo "Starting GoBalancer with $${CONFIG:-config/config.yaml}: its start-up line gives the balancer's and the dashboard's"; \
	echo "addresses (the demo: curl localhost:8080, dashboard http://127.0.0.1:8081/). Ctrl-C stops."; \
	node dist/cli.js --config $${CONFIG:-config/config.yaml}

# End-to-end suites that start gobalancer: run once per data path (data-path.test.ts
# chooses its own). Those that check what is upstream of the data path run once:
# discovery (Docker, Kubernetes), the dashboard's browser test, the API and its
# persistence, the pickers (algorithms, slow start), health probes (their own sockets)
# and the etcd store over TLS; the others cover every behaviour of the data path on both.
UPSTREAM_SUITES = test/data-path.test.ts test/docker.test.ts test/kubernetes.test.ts test/dashboard.test.ts \
	test/api.test.ts test/algorithms.test.ts test/slow-start.test.ts test/health.test.ts test/etcd-tls.test.ts
DATA_PATH_SUITES = $(filter-out $(UPSTREAM_SUITES),$(shell grep -l startBalancer test/*.test.ts))
NODE_TEST := node --test --test-concurrency=2 --test-timeout=120000

## test: type-check, build, and run every unit and end-to-end test, the end-to-end
## suites on both data paths (libuv handles, then net.Socket)
test: build typecheck
	GOBALANCER_TEST_DATA_PATH=handles $(NODE_TEST) 'src/**/*.test.ts' 'test/**/*.test.ts'
	GOBALANCER_TEST_DATA_PATH=sockets $(NODE_TEST) $(DATA_PATH_SUITES)

## fuzz: the property-based tests in test/fuzz/ (which `make test` runs with a few hundred inputs
## each) with FUZZ_RUNS inputs per property (default 20000); FUZZ_SEED replays a run;
## FUZZ_TIME_LIMIT_S (default 300) stops each property early so the run always ends
fuzz: build
	FUZZ_RUNS=$${FUZZ_RUNS:-20000} FUZZ_REPORT=1 node --test --test-concurrency=1 --test-timeout=3600000 'test/fuzz/**/*.test.ts'

## build: compile TypeScript to dist/
build: dist/.built
dist/.built: $(DEPS_STAMP) $(SOURCES)
	tsc -p tsconfig.build.json
	chmod +x dist/cli.js
	touch $@

## reference: write the configuration reference generated from the schema into the README
reference: $(DEPS_STAMP)
	node -e 'const fs = require("node:fs"); import("./src/config/reference.ts").then((m) => fs.writeFileSync("README.md", m.withCurrentReference(fs.readFileSync("README.md", "utf8"))))'

typecheck: $(DEPS_STAMP)
	tsc -p tsconfig.json

## bench: backend-pick micro-benchmarks for every algorithm
bench: build
	node --expose-gc --max-old-space-size=20000 bench/pick.ts

## bench-peers: GoBalancer vs HAProxy and nginx stream, ~10 min (ROUNDS=5 DURATION=4 IDLE=10000 PATHS=... QUICK=1 DOCS=0;
## PATHS=...,gobalancer-baseline BASELINE=<checkout with dist built> runs another build alongside);
## installs haproxy, nginx, iperf3, wrk from Debian if missing; writes docs/benchmarks.md
bench-peers: build
	node bench/peers/run.ts

## bench-replicas: an API change's acknowledgement and its arrival at a second replica through a real etcd (installs etcd-server if missing; MEMBERS=3 for three members)
bench-replicas: build
	node bench/replicas.ts --members $${MEMBERS:-1}

## soak: connection churn through gobalancer for SOAK (default 5m), sampled every 10 s;
## fails when descriptors, RSS, active connections, event-loop delay or timers trend up
soak: build
	node bench/soak/run.ts

deps: $(DEPS_STAMP)

$(NODE_STAMP): toolchain/package.json toolchain/package-lock.json
	cd toolchain && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(DEPS_STAMP): package.json package-lock.json $(NODE_STAMP)
	@node -e 'if (+process.versions.node.split(".")[0] < 24) { console.error("Node " + process.version + " found; GoBalancer needs 24+"); process.exit(1) }'
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf dist node_modules toolchain/node_modules
