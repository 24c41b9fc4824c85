# Blixt — the two commands a person needs are `make demo` and `make test`.
# Both install what they need (Debian packages), build, and run as root.

SHELL := /bin/bash
CARGO ?= cargo
APT_PACKAGES := clang llvm libbpf-dev bpftool iproute2 ethtool
# the benchmark peers (also run at tiny sizes by `make test`): kube-proxy-style iptables and
# nftables rules (with conntrack, the tool kube-proxy uses to clear its entries), HAProxy, and wrk
# as the HTTP load generator
APT_PACKAGES += nftables iptables conntrack haproxy wrk

.PHONY: demo test deps k8s-bins deploy-tools build lint unit fixtures lab bench conformance clean help

help:
	@echo "make demo   - build and run the demo lab (root)"
	@echo "make test   - install dependencies, lint, run every test (root)"
	@echo "make bench  - run the benchmark harness (root); QUICK=1 for a short run"
	@echo "make fuzz   - the dataplane fuzzer's long run, 10M packets (root; docs/reliability.md)"

## deps: Debian packages (clang for the BPF C programs, bpftool, iproute2) and a bpffs mount.
deps:
	@bash hack/deps.sh $(APT_PACKAGES)

## k8s-bins: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy and the
## conformance suite's echo-basic built from the Go module proxy (cached under
## ~/.cache/blixt/k8s/<version>; the first build takes ~20 minutes on 2 cores).
k8s-bins:
	@bash tests/k8s/build.sh

## deploy-tools: helm and kustomize built from the Go module proxy (cached under ~/.cache/blixt/tools).
deploy-tools:
	@bash deploy/tools.sh

build: deps
	$(CARGO) build --workspace --all-targets

demo: deps
	@bash hack/require-root.sh "make demo"
	$(CARGO) run -q -p blixt -- demo

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## test: everything — unit tests, packet fixtures (BPF_PROG_TEST_RUN), the namespace lab.
test: deps lint k8s-bins deploy-tools
	@bash hack/require-root.sh "make test"
	$(CARGO) test --workspace --no-fail-fast

unit:
	$(CARGO) test --workspace --lib

fixtures: deps
	$(CARGO) test -p blixt-agent --test fixtures

lab: deps
	$(CARGO) test -p blixt --test lab

bench: deps k8s-bins
	@QUICK=$(QUICK) bash bench/run.sh

## fuzz: the dataplane fuzzer's long run (crates/blixt-agent/tests/fuzz.rs, docs/reliability.md):
## FUZZ_PACKETS mutated packets per mode (XDP and TC; default 5M each, 10M in all), FUZZ_SEED the
## PRNG seed (decimal); report in target/fuzz-report.txt. `make test` runs a quick 110k.
FUZZ_PACKETS ?= 5000000
.PHONY: fuzz
fuzz: deps
	@bash hack/require-root.sh "make fuzz"
	BLIXT_FUZZ_PACKETS=$(FUZZ_PACKETS) BLIXT_FUZZ_SEED=$(FUZZ_SEED) $(CARGO) test -p blixt-agent --test fuzz -- --ignored fuzz_long --nocapture

## conformance: the upstream Gateway API conformance suite (v1.7.0; GATEWAY-TCP, -UDP, -TLS); report
## and summary in target/conformance/. Without KUBECONFIG (root): a cluster of the test harness
## whose pods run, Blixt installed from its Helm chart (crates/blixt-deploy-tests/tests/conformance.rs).
## With KUBECONFIG: that cluster, which must run Blixt and real pods. CONFORMANCE_ARGS go to the
## runner. See docs/conformance.md.
conformance: deps k8s-bins deploy-tools
ifeq ($(KUBECONFIG),)
	@bash hack/require-root.sh "make conformance"
	$(CARGO) build -p blixt --bin blixt
	BLIXT_CONFORMANCE_ARGS="$(CONFORMANCE_ARGS)" $(CARGO) test -p blixt-deploy-tests --test conformance -- --nocapture
else
	@bash hack/conformance.sh $(CONFORMANCE_ARGS)
endif

clean:
	$(CARGO) clean
