# fsstack top-level build.
#
#   make            build bin/fsstack and bin/libfsstack.so (the shim, preload/shim)
#   make test       deps, build, go vet + go test (as root: the netns tests run too;
#                   the conformance suite's shim half with FSSTACK_SHIM=bin/libfsstack.so),
#                   then the shim's own tests
#   make lab        deps, build, bin/fsstack lab: fsstack against the kernel in two namespaces
#   make lab-nginx  the same with Debian's nginx (on fsstack through the LD_PRELOAD shim)
#   make bench      deps, build, the same comparison as a Go benchmark (keep-alive, close and
#                   bulk phases): bench/results.json, bench/results.svg (the ratios as a bar
#                   chart), summary lines, CPU profile of the fsstack server
#                   for the built-in Go server, nginx and redis-server (BENCH_FLAGS="-server go" for one);
#                   then the reliability suite's SYN flood: bench/reliability.json
#   make deps       install the Debian packages the tests and the lab use (scripts/install-deps.sh)
#   make install    build, then install bin/fsstack, libfsstack.so, the systemd unit and
#                   its settings file under DESTDIR (PREFIX=/usr/local, SYSCONFDIR=/etc)
#   make clean
#
# Variables: LAB_FLAGS (e.g. LAB_FLAGS="--queues 2 --rounds 3"), BENCH_FLAGS
# (e.g. BENCH_FLAGS="-queues 4 -duration 5s -rounds 3"), TEST_FLAGS, TEST_TIMEOUT,
# VERSION (stamped into bin/fsstack).

GO       ?= go
BIN      := bin
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
GOFLAGS_BUILD ?=
TEST_TIMEOUT  ?= 30m
TEST_FLAGS    ?= -count=1
LAB_FLAGS     ?=
BENCH_FLAGS   ?= -queues 4 -duration 5s

# The LD_PRELOAD shim is C, built by preload/shim's own Makefile, which is
# called as `$(MAKE) -C $(SHIM_DIR) OUT=<abs path of bin/libfsstack.so>` and
# (for `make test`) `$(MAKE) -C $(SHIM_DIR) test OUT=...`. Until that
# Makefile exists, `make` builds only the daemon.
SHIM_DIR  ?= preload/shim
SHIM_LIB  := $(BIN)/libfsstack.so
HAVE_SHIM := $(wildcard $(SHIM_DIR)/Makefile)

DEPS_SCRIPT := scripts/install-deps.sh

.PHONY: all build fsstack shim deps test test-shim-conformance vet lab lab-nginx bench install clean

all: build

build: fsstack shim

# bin/fsstack is static (CGO_ENABLED=0: no dynamic loader runs for it), so an
# LD_PRELOAD it inherits never loads into it: `LD_PRELOAD=libfsocket.so fsstack
# run -- nginx` must not run libfsocket's constructor, which exits when
# /dev/fastsocket cannot be opened, in the launcher (cmd/fsstack/run.go).
fsstack:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -ldflags '$(LDFLAGS)' -o $(BIN)/fsstack ./cmd/fsstack

shim: deps
ifneq ($(HAVE_SHIM),)
	@mkdir -p $(BIN)
	$(MAKE) -C $(SHIM_DIR) OUT=$(abspath $(SHIM_LIB))
else
	@echo "make: no $(SHIM_DIR)/Makefile yet; skipping $(SHIM_LIB)"
endif

deps:
ifneq ($(wildcard $(DEPS_SCRIPT)),)
	bash $(DEPS_SCRIPT)
endif

vet:
	$(GO) vet ./...

# FSSTACK_SHIM enables the shim half of the conformance suite
# (preload/conformance: TestShim against an in-process daemon on the kernel's
# TCP stack, TestShimDisabled).
test: deps build vet
	$(if $(HAVE_SHIM),env -u FSSTACK_SOCKET -u FSSTACK_RELIABILITY_JSON FSSTACK_SHIM=$(abspath $(SHIM_LIB))) $(GO) test -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) ./...
ifneq ($(HAVE_SHIM),)
	$(MAKE) -C $(SHIM_DIR) test OUT=$(abspath $(SHIM_LIB))
endif

# The differential conformance suite under the shim, against a daemon on the
# kernel's TCP stack (checks the shim itself); `make test` runs it too, this
# runs it alone.
test-shim-conformance: build
	$(MAKE) -C preload/conformance shimd SHIM=$(abspath $(SHIM_LIB))

lab: deps build
	$(BIN)/fsstack lab $(LAB_FLAGS)

lab-nginx: deps build
	$(BIN)/fsstack lab --server nginx $(LAB_FLAGS)

# The reliability suite's SYN flood (preload/servers TestNginxSYNFlood,
# also part of `make test`) writes its figures beside the benchmark's when
# FSSTACK_RELIABILITY_JSON names a file.
bench: deps build
	$(GO) test ./bench -run '^$$' -bench '^BenchmarkLab$$' -benchtime 1x -timeout 20m \
		-args -fsstack $(abspath $(BIN)/fsstack) $(BENCH_FLAGS)
	FSSTACK_RELIABILITY_JSON=$(abspath bench/reliability.json) $(GO) test ./preload/servers \
		-run '^TestNginxSYNFlood$$' -count=1 -v -timeout 10m

# Installed layout: `fsstack run` finds the shim in $(PREFIX)/lib/fsstack.
# The settings file is installed only if none is there, so an upgrade
# keeps the operator's.
PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
DESTDIR    ?=
UNITDIR    ?= $(PREFIX)/lib/systemd/system

install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/fsstack $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/default
	install -m 0755 $(BIN)/fsstack $(DESTDIR)$(PREFIX)/bin/fsstack
	$(if $(HAVE_SHIM),install -m 0755 $(SHIM_LIB) $(DESTDIR)$(PREFIX)/lib/fsstack/libfsstack.so)
	sed -e 's|@BINDIR@|$(PREFIX)/bin|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' dist/fsstack.service.in > $(DESTDIR)$(UNITDIR)/fsstack.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/fsstack.service
	test -e $(DESTDIR)$(SYSCONFDIR)/default/fsstack || install -m 0644 dist/fsstack.default $(DESTDIR)$(SYSCONFDIR)/default/fsstack

clean:
	rm -rf $(BIN) bench/*.pprof
ifneq ($(HAVE_SHIM),)
	-$(MAKE) -C $(SHIM_DIR) clean OUT=$(abspath $(SHIM_LIB))
endif
