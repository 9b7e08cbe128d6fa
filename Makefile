# ngx_http_playarr_metrics_module
#
#   make deps    install what is missing (Debian packages, apt-get)
#   make         build build/ngx_http_playarr_metrics_module.so
#   make run     nginx + the module in front of a demo Playarr, on loopback
#   make test    deps + build + the test suite (prove -r t/)
#   make bench   per-request cost and throughput, module on vs off
#   make lint    the module built with clang -Werror, plus style checks
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

TOP := $(CURDIR)
BUILD := $(TOP)/build
MODULE := ngx_http_playarr_metrics_module
SO := $(BUILD)/$(MODULE).so
OBJDIR := $(BUILD)/nginx

SOURCES := config $(wildcard $(MODULE)/*.c $(MODULE)/*.h shm/*.c shm/*.h)

# Debian packages: building, testing, running the demo.  A package counts
# as present when it is installed or provided by an installed package
# (nodesource's nodejs provides npm, for instance); apt is not called at all
# when nothing is missing.
DEPS := nginx nginx-dev libssl-dev libjansson-dev libpcre2-dev zlib1g-dev \
        prometheus curl perl python3-prometheus-client clang nodejs npm
BENCH_DEPS := wrk valgrind

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

.PHONY: all build deps bench-deps run test bench lint clean

all: build

build: $(SO)

deps:
	$(call apt_install,$(DEPS))

bench-deps: deps
	$(call apt_install,$(BENCH_DEPS))

# Debian's tree carries conf_flags (a bash array); another tree is
# configured with --with-compat only, which is what binary compatibility
# with a packaged nginx needs.
$(OBJDIR)/objs/Makefile: $(NGINX_SRC)/configure config
	rm -rf $(OBJDIR)
	mkdir -p $(BUILD)
	cp -a $(NGINX_SRC) $(OBJDIR)
	cd $(OBJDIR) && \
	if [ -f conf_flags ]; then . ./conf_flags; \
	else NGX_CONF_FLAGS=(--with-compat); fi; \
	./configure --with-cc=$(CC) "$${NGX_CONF_FLAGS[@]}" \
	    --with-cc-opt="$(CC_OPT)" \
	    --add-dynamic-module=$(TOP) > $(BUILD)/configure.log 2>&1 \
	    || { tail -30 $(BUILD)/configure.log; exit 1; }

$(SO): $(OBJDIR)/objs/Makefile $(SOURCES)
	$(MAKE) -C $(OBJDIR) -f objs/Makefile modules
	cp $(OBJDIR)/objs/$(MODULE).so $(SO).tmp && mv -f $(SO).tmp $(SO)

run: deps build
	@PORT=$(PORT) UPSTREAM_PORT=$(UPSTREAM_PORT) NGINX_BIN=$(NGINX_BIN) \
	    BUILD=$(BUILD) bash t/lib/demo-run.sh

test: deps build
	PLAYARR_METRICS_SO=$(SO) NGINX_BIN=$(NGINX_BIN) prove -r t/

bench: bench-deps build
	bash bench/run

lint:
	$(MAKE) CC=clang BUILD=$(BUILD)/clang build

clean:
	rm -rf $(BUILD)
