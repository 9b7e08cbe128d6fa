# ngx_http_playarr_metrics_module
#
#   make deps    install what is missing (Debian packages, apt-get)
#   make         build build/ngx_http_playarr_metrics_module.so
#   make run     nginx + the module in front of a demo Playarr, on loopback
#   make test    deps + build + the whole test suite (prove -r t/), with
#                PLAYARR_TEST_ALL=1: the slow and system-changing tests too
#                (the .deb installed here, fuzzing, 50 reloads, kill -9
#                under load, soak); what .ci/run runs
#   make check   the quick developer run: the same without those (about
#                half the time)
#   make bench   per-request cost, throughput, render time, module on vs off;
#                fails above the cost gates (bench/sections/15-gates.sh)
#   make bench-gates  the callgrind cost gates only (BENCH_ONLY=gates)
#   make lint    the module built with clang -Werror, plus nginx style checks
#                (80 columns, no tabs, no trailing blanks)
#   make deb     build/libnginx-mod-http-playarr-metrics_VERSION_ARCH.deb
#   make fuzz    the libFuzzer harnesses of t/fuzz/, FUZZ_SECONDS (60) each
#   make test ASAN=1      the suite, the module built with ASan and UBSan
#   make test VALGRIND=1  the suite, nginx under valgrind memcheck
#
# NGINX_SRC=/path/to/nginx-x.y.z builds against another nginx source tree
# (default: Debian's nginx-dev tree, configured with Debian's flags).

SHELL := /bin/bash

NGINX_SRC ?= /usr/share/nginx/src
NGINX_BIN ?= /usr/sbin/nginx
CC ?= cc
PORT ?= 8080
# the demo Playarr upstream of make run; empty: PORT + 1
UPSTREAM_PORT ?=
# Debian's own optimisation and hardening flags (nginx -V)
CC_OPT ?= -g -O2 -fstack-protector-strong -Wformat -Werror=format-security \
          -fPIC -Wdate-time -D_FORTIFY_SOURCE=2
LD_OPT ?= -Wl,-z,relro -Wl,-z,now -fPIC

TOP := $(CURDIR)
BUILD := $(TOP)/build

# make test ASAN=1: the module built with AddressSanitizer and UBSan (and
# float-cast-overflow, which gcc leaves out of "undefined" and clang not),
# in a build directory of its own; t/lib/nginx-wrap preloads their runtimes
# into Debian's nginx.  VALGRIND=1: t/lib/nginx-wrap runs nginx under
# memcheck.  Both are for this make only: a make that the tests run
# (t/30-deb.t runs make deb) builds as usual.
MAKEOVERRIDES := $(filter-out ASAN=% VALGRIND=%,$(MAKEOVERRIDES))
unexport ASAN VALGRIND

ifeq ($(ASAN),1)
BUILD := $(TOP)/build/asan
SAN_FLAGS := -fsanitize=address,undefined,float-cast-overflow
CC_OPT := -g -O1 -fno-omit-frame-pointer -fPIC $(SAN_FLAGS)
LD_OPT := -fPIC $(SAN_FLAGS)
endif

MODULE := ngx_http_playarr_metrics_module
SO := $(BUILD)/$(MODULE).so
OBJDIR := $(BUILD)/nginx

SOURCES := config $(wildcard $(MODULE)/*.c $(MODULE)/*.h shm/*.c shm/*.h)

# clang's libFuzzer runtime (make fuzz, and its smoke in make test)
FUZZ_DEPS := libclang-rt-dev

# Debian packages: building, testing, running the demo.  A package counts
# as present when it is installed or provided by an installed package
# (nodesource's nodejs provides npm, for instance); apt is not called at all
# when nothing is missing.
DEPS := nginx nginx-dev libssl-dev libjansson-dev libpcre2-dev zlib1g-dev \
        prometheus curl perl python3-prometheus-client clang nodejs npm \
        chromium $(FUZZ_DEPS)
BENCH_DEPS := wrk valgrind
# make deb: debhelper and dpkg-dev (dh_nginx comes with nginx-dev)
DEB_DEPS := debhelper dpkg-dev nginx-dev libssl-dev libjansson-dev \
            libpcre2-dev zlib1g-dev

# The test suite under sanitizers (see ASAN above) or valgrind: nginx runs
# through t/lib/nginx-wrap, which sends every report to a file in
# $(SAN_DIR), named after the test; t/99-sanitizers.t fails on any.
SAN_DIR := $(BUILD)/sanitizer
SAN_PRELOAD = $(strip $(if $(shell $(CC) --version | grep -i clang), \
    $(shell $(CC) -print-file-name=libclang_rt.asan-$(shell uname -m).so), \
    $(shell $(CC) -print-file-name=libasan.so) \
    $(shell $(CC) -print-file-name=libubsan.so)))
SAN_ENV = NGINX_BIN=$(TOP)/t/lib/nginx-wrap PLAYARR_WRAP_NGINX=$(NGINX_BIN) \
          PLAYARR_SAN_DIR=$(SAN_DIR) PLAYARR_FUZZ_SECONDS=0

ifeq ($(ASAN),1)
TEST_SETUP = rm -rf $(SAN_DIR) && mkdir -m 1777 -p $(SAN_DIR)
TEST_ENV = $(SAN_ENV) PLAYARR_WRAP=asan PLAYARR_SAN_PRELOAD="$(SAN_PRELOAD)"
else ifeq ($(VALGRIND),1)
DEPS += valgrind
TEST_SETUP = rm -rf $(SAN_DIR) && mkdir -m 1777 -p $(SAN_DIR)
TEST_ENV = $(SAN_ENV) PLAYARR_WRAP=valgrind
else
TEST_DEPS = fuzz-build
TEST_ENV = PLAYARR_FUZZ_DIR=$(FUZZ_DIR)
endif

# libFuzzer harnesses (t/fuzz/): the module's store, state, route, update
# and format files, unchanged, with stand-ins for the nginx core functions
# they call (t/fuzz/ngx_stubs.c), built by clang with ASan and UBSan.  Only
# the module's files and the harnesses are instrumented for coverage.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_NAMES := route auth update render state rebind jwt merge
FUZZ_DIR := $(BUILD)/fuzz
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS := -g -O1 -fno-omit-frame-pointer -W -Wall -Wno-unused-parameter \
    $(addprefix -I $(OBJDIR)/,src/core src/event src/event/modules \
                              src/os/unix objs src/http src/http/modules \
                              src/http/v2) \
    -I $(MODULE) -I shm -I t/fuzz \
    -DFUZZ_SCHEMA='"$(TOP)/docs/playarr/metrics.json"' \
    -DFUZZ_ROUTES='"$(TOP)/docs/playarr-routes.conf"'
FUZZ_MODULE_SRCS := $(wildcard shm/*.c) \
    $(addprefix $(MODULE)/$(MODULE:_module=)_,route.c update.c format.c \
                                              family.c file.c jwt.c merge.c)
FUZZ_SUPPORT_SRCS := $(addprefix t/fuzz/,ngx_stubs.c fuzz_common.c \
                                         fuzz_check.c)

define apt_install
	@have=$$(dpkg-query -W -f='$${db:Status-Abbrev}|$${Package}|$${Provides}\n' \
	        2>/dev/null | awk -F'|' '$$1 ~ /^ii/ { print $$2; \
	        n = split($$3, p, /, */); \
	        for (i = 1; i <= n; i++) { sub(/ .*/, "", p[i]); print p[i] } }'); \
	missing=; \
	for p in $(1); do \
	    grep -qxF "$$p" <<< "$$have" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	    echo "installing:$$missing"; \
	    $$sudo apt-get update -qq && \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	        --no-install-recommends $$missing; \
	fi
endef

.PHONY: all build deps bench-deps browser-deps js-deps run test check \
        bench bench-gates lint clean deb fuzz fuzz-build

all: build

build: $(SO)

deps:
	$(call apt_install,$(DEPS))

bench-deps: deps
	$(call apt_install,$(BENCH_DEPS))

# t/66-browser.t: puppeteer-core from npm, as t/browser/package-lock.json
# pins it, driving Debian's chromium (make deps); nothing is installed
# outside t/browser/node_modules
BROWSER_MODULES := t/browser/node_modules/.package-lock.json

browser-deps: $(BROWSER_MODULES)

$(BROWSER_MODULES): t/browser/package.json t/browser/package-lock.json
	cd t/browser && npm ci --no-audit --no-fund
	touch $@

# Debian's tree carries conf_flags (a bash array); another tree is
# configured with --with-compat only, which is what binary compatibility
# with a packaged nginx needs.  A release tarball has ./configure, a git
# checkout of nginx auto/configure.
$(OBJDIR)/objs/Makefile: $(wildcard $(NGINX_SRC)/configure \
                                    $(NGINX_SRC)/auto/configure) config
	rm -rf $(OBJDIR)
	mkdir -p $(BUILD)
	cp -a $(NGINX_SRC) $(OBJDIR)
	cd $(OBJDIR) && \
	if [ -f conf_flags ]; then . ./conf_flags; \
	else NGX_CONF_FLAGS=(--with-compat); fi; \
	cfg=./configure; [ -f $$cfg ] || cfg=./auto/configure; \
	$$cfg --with-cc=$(CC) "$${NGX_CONF_FLAGS[@]}" \
	    --with-cc-opt="$(CC_OPT)" --with-ld-opt="$(LD_OPT)" \
	    --add-dynamic-module=$(TOP) > $(BUILD)/configure.log 2>&1 \
	    || { tail -30 $(BUILD)/configure.log; exit 1; }

$(SO): $(OBJDIR)/objs/Makefile $(SOURCES)
	$(MAKE) -C $(OBJDIR) -f objs/Makefile modules
	cp $(OBJDIR)/objs/$(MODULE).so $(SO).tmp && mv -f $(SO).tmp $(SO)

run: deps build
	@PORT=$(PORT) UPSTREAM_PORT=$(UPSTREAM_PORT) NGINX_BIN=$(NGINX_BIN) \
	    BUILD=$(BUILD) bash t/lib/demo-run.sh

# prom-client for the Node scripts of t/js/, from its package-lock.json;
# nothing to do (no network) once t/js/node_modules matches it
js-deps: t/js/node_modules/.package-lock.json

t/js/node_modules/.package-lock.json: t/js/package.json t/js/package-lock.json
	npm ci --prefix t/js --no-audit --no-fund --loglevel=error

# PLAYARR_TEST_ALL=1 (as nginx-tests' TEST_NGINX_UNSAFE): the tests that
# take long or change the machine run too; without it they skip
# (PlayarrTest::need_all)
TEST_RUN = PLAYARR_METRICS_SO=$(SO) NGINX_BIN=$(NGINX_BIN) $(TEST_ENV) \
           prove -r t/

test: deps build browser-deps js-deps $(TEST_DEPS)
	$(TEST_SETUP)
	PLAYARR_TEST_ALL=1 $(TEST_RUN)

check: deps build browser-deps js-deps
	$(TEST_SETUP)
	PLAYARR_TEST_ALL= $(TEST_RUN)

bench: bench-deps build js-deps
	bash bench/run

# the quick check of the cost gates: the module's own and whole cost per
# request on each mix, the render per series, a known session (callgrind)
bench-gates: bench-deps build
	BENCH_ONLY=gates bash bench/run

lint:
	$(MAKE) CC=clang BUILD=$(BUILD)/clang build
	@bad=$$(awk 'length > 80 { print FILENAME ":" FNR ": over 80 columns" } \
	        /\t/ { print FILENAME ":" FNR ": tab" } \
	        /[ ]$$/ { print FILENAME ":" FNR ": trailing blank" }' \
	        $(MODULE)/*.[ch] shm/*.[ch]); \
	if [ -n "$$bad" ]; then echo "$$bad"; exit 1; fi; \
	echo "style: ok"

fuzz-build: $(addprefix $(FUZZ_DIR)/,$(FUZZ_NAMES))

$(FUZZ_DIR)/.objs: $(FUZZ_MODULE_SRCS) $(FUZZ_SUPPORT_SRCS) t/fuzz/fuzz.h \
                   $(wildcard $(MODULE)/*.h shm/*.h) | $(OBJDIR)/objs/Makefile
	mkdir -p $(FUZZ_DIR)/obj
	rm -f $(FUZZ_DIR)/obj/*.o
	set -e; for f in $(FUZZ_MODULE_SRCS); do \
	    $(FUZZ_CC) -c $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(FUZZ_SAN) \
	        -o $(FUZZ_DIR)/obj/$$(basename $$f .c).o $$f; \
	done; \
	for f in $(FUZZ_SUPPORT_SRCS); do \
	    $(FUZZ_CC) -c $(FUZZ_CFLAGS) $(FUZZ_SAN) \
	        -o $(FUZZ_DIR)/obj/$$(basename $$f .c).o $$f; \
	done
	touch $@

$(FUZZ_DIR)/%: t/fuzz/fuzz_%.c $(FUZZ_DIR)/.objs $(MODULE)/*_token.c
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $< \
	    $(FUZZ_DIR)/obj/*.o -ljansson -lcrypto -lm

fuzz: deps fuzz-build
	@fail=0; for n in $(FUZZ_NAMES); do \
	    bash t/fuzz/run.sh $(FUZZ_DIR) $$n $(FUZZ_SECONDS) || fail=1; \
	done; exit $$fail

# The Debian package, made by dpkg-buildpackage from debian/ in a copy of
# the checkout (build/deb/), so that nothing is written outside it; its
# version is the module's (NGX_HTTP_PLAYARR_METRICS_VERSION), which
# debian/changelog must match.
DEB_PKG = libnginx-mod-http-playarr-metrics
DEB_VERSION = $(shell sed -n 's/^\#define NGX_HTTP_PLAYARR_METRICS_VERSION *"\(.*\)"/\1/p' \
                  $(MODULE)/$(MODULE).h)
DEB_ARCH = $(shell dpkg --print-architecture)
DEB_NAME = $(DEB_PKG)_$(DEB_VERSION)_$(DEB_ARCH).deb

deb:
	$(call apt_install,$(DEB_DEPS))
	@v=$$(dpkg-parsechangelog -l debian/changelog -S Version); \
	if [ "$$v" != "$(DEB_VERSION)" ]; then \
	    echo "debian/changelog is at $$v, $(MODULE).h at" \
	         "$(DEB_VERSION): add a changelog entry" >&2; \
	    exit 1; \
	fi
	rm -rf $(BUILD)/deb
	mkdir -p $(BUILD)/deb/$(DEB_PKG)
	tar -C $(TOP) --exclude='./build*' --exclude=./.git \
	    --exclude='$(patsubst $(TOP)/%,./%,$(BUILD))' -cf - . \
	    | tar -C $(BUILD)/deb/$(DEB_PKG) -xf -
	cd $(BUILD)/deb/$(DEB_PKG) && \
	dpkg-buildpackage -us -uc -b > $(BUILD)/deb/build.log 2>&1 \
	    || { tail -40 $(BUILD)/deb/build.log; exit 1; }
	mv -f $(BUILD)/deb/$(DEB_NAME) $(BUILD)/$(DEB_NAME)
	@echo "$(BUILD)/$(DEB_NAME)"

clean:
	rm -rf $(BUILD)
