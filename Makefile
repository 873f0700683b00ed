# taza — two commands: `make demo` (the main job) and `make test` (set up, lint, test).
# Every target sets up what it needs first; running one twice does nothing new.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := mosquitto mosquitto-clients influxdb victoria-metrics chromium gcc make mosquitto-dev libmosquitto-dev
SERVER_BINARIES := mosquitto mosquitto_pub influxd victoria-metrics chromium

.PHONY: all setup system venv lint format test unit integration bench demo clean help

# deploy/ is checked by the tools a city runs it with: promtool (prometheus) and
# systemd-analyze (systemd).
APT_PACKAGES += prometheus systemd
SERVER_BINARIES += promtool systemd-analyze

all: test

help:
	@echo "make demo   set up, start local servers + taza-ingest, run a simulated fleet, report"
	@echo "           DEMO_ARGS=--short (15 s) | --keep-running (explore afterwards) | --help"
	@echo "make test   set up, then ruff + mypy + pytest (real servers, started by the tests)"
	@echo "make lint   ruff + mypy only;  make bench   throughput/latency figures (bench/)"

setup: system venv

# apt only when a binary is missing; `apt-get update` always before the first install.
# A policy-rc.d answering 101 keeps the packages' own services (influxdb, victoria-metrics,
# prometheus listen on every interface by default) from being started by the install: taza
# starts its servers itself, on 127.0.0.1.
system:
	@missing=""; for b in $(SERVER_BINARIES); do command -v $$b >/dev/null 2>&1 || missing=1; done; \
	test -f /usr/include/mosquitto_broker.h -a -f /usr/include/mosquitto.h || missing=1; \
	command -v gcc >/dev/null 2>&1 || missing=1; \
	if ! $(PYTHON) -c 'import venv, ensurepip' >/dev/null 2>&1; then missing=1; extra="python3-venv python3-pip"; fi; \
	if ! $(PYTHON) -c 'import os, sysconfig; assert os.path.exists(sysconfig.get_paths()["include"] + "/Python.h")' >/dev/null 2>&1; then \
		missing=1; extra="$$extra python3-dev"; fi; \
	if [ -n "$$missing" ]; then \
		echo ">> installing system packages: $(APT_PACKAGES) $$extra"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		norc=""; if [ ! -e /usr/sbin/policy-rc.d ]; then \
			printf '#!/bin/sh\nexit 101\n' | $$SUDO tee /usr/sbin/policy-rc.d >/dev/null && \
			$$SUDO chmod 755 /usr/sbin/policy-rc.d && norc=1; \
		fi; \
		$$SUDO apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $(APT_PACKAGES) $$extra; \
		rc=$$?; [ -z "$$norc" ] || $$SUDO rm -f /usr/sbin/policy-rc.d; exit $$rc; \
	fi

venv: $(STAMP)

# setup.py compiles the modules pyproject.toml lists under [tool.taza] compiled (mypyc, into
# the checkout): an edit to one of them reinstalls, or the tests would run the old build.
COMPILED_SOURCES := $(shell sed -n '/^compiled = \[/,/^]/s/^ *"\(.*\.py\)",*/\1/p' pyproject.toml)
COMPILED_SOURCES += $(shell sed -n '/^extensions = \[/,/^]/s/^ *"\(.*\.c\)",*/\1/p' pyproject.toml)

$(STAMP): pyproject.toml setup.py $(COMPILED_SOURCES)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

format: venv
	$(BIN)/ruff format ingest devices simulator devstack operators tests bench
	$(BIN)/ruff check --fix ingest devices simulator devstack operators tests bench

lint: venv
	$(BIN)/ruff check ingest devices simulator devstack operators tests bench
	$(BIN)/ruff format --check ingest devices simulator devstack operators tests bench
	$(BIN)/mypy

test: setup lint
	$(BIN)/pytest -q

unit: venv
	$(BIN)/pytest -q -m "not integration"

integration: setup
	$(BIN)/pytest -q -m integration

# valgrind only for bench/instructions.py (instruction counts): not needed by the tests.
bench: setup
	@command -v valgrind >/dev/null 2>&1 || { SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends valgrind; }
	$(BIN)/python bench/decode.py
	$(BIN)/python bench/hotpath.py
	$(BIN)/python bench/instructions.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/alerts.py
	$(BIN)/python bench/compare.py --paho
	$(BIN)/python bench/drain_phases.py
	$(BIN)/python bench/backlog.py
	$(BIN)/python bench/steady.py

demo: setup
	$(BIN)/python -m devstack.demo $(DEMO_ARGS)

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache .hypothesis build
	find . -path ./.venv -prune -o -name '*.cpython-*.so' -print -delete
	rm -f $(STAMP)
