# fsstack top-level build.
#
#   make            build bin/fsstack (and bin/libfsstack.so once preload/shim has a Makefile)
#   make test       go vet + go test (as root: the netns tests run too)
#   make lab        bin/fsstack lab: fsstack against the kernel in two namespaces
#   make bench      the same comparison as a Go benchmark: bench/results.json + CPU profile
#   make clean

GO       ?= go
BIN      := bin
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
GOFLAGS_BUILD ?=
TEST_TIMEOUT  ?= 30m
TEST_FLAGS    ?=
LAB_FLAGS     ?=
BENCH_FLAGS   ?= -queues 4 -duration 5s

# The LD_PRELOAD shim is C, built by preload/shim's own Makefile, which is
# called as `$(MAKE) -C $(SHIM_DIR) OUT=<abs path of bin/libfsstack.so>` and
# (for `make test`) `$(MAKE) -C $(SHIM_DIR) test OUT=...`. Until that
# Makefile exists, `make` builds only the daemon.
SHIM_DIR  ?= preload/shim
SHIM_LIB  := $(BIN)/libfsstack.so
HAVE_SHIM := $(wildcard $(SHIM_DIR)/Makefile)

.PHONY: all build fsstack shim test vet lab bench clean

all: build

build: fsstack shim

fsstack:
	@mkdir -p $(BIN)
	$(GO) build $(GOFLAGS_BUILD) -ldflags '$(LDFLAGS)' -o $(BIN)/fsstack ./cmd/fsstack

shim:
ifneq ($(HAVE_SHIM),)
	@mkdir -p $(BIN)
	$(MAKE) -C $(SHIM_DIR) OUT=$(abspath $(SHIM_LIB))
else
	@echo "make: no $(SHIM_DIR)/Makefile yet; skipping $(SHIM_LIB)"
endif

vet:
	$(GO) vet ./...

test: vet
	$(GO) test -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) ./...
ifneq ($(HAVE_SHIM),)
	$(MAKE) -C $(SHIM_DIR) test OUT=$(abspath $(SHIM_LIB))
endif

lab: fsstack
	$(BIN)/fsstack lab $(LAB_FLAGS)

bench: fsstack
	$(GO) test ./bench -run '^$$' -bench '^BenchmarkLab$$' -benchtime 1x -timeout 20m \
		-args -fsstack $(abspath $(BIN)/fsstack) $(BENCH_FLAGS)

clean:
	rm -rf $(BIN) bench/*.pprof
ifneq ($(HAVE_SHIM),)
	-$(MAKE) -C $(SHIM_DIR) clean OUT=$(abspath $(SHIM_LIB))
endif
