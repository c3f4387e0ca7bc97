# Quick start: `make run` (server on built-in defaults) and `make test` (the whole suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test install install-test build-deps browser-deps bench-deps bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel

$(VENV)/.installed: pyproject.toml setup.py media/_fastpath.c | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml setup.py media/_fastpath.c | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: build-deps install
	$(BIN)/lienthong serve

# Browser tests use Debian's Chromium and Firefox ESR (Playwright must not download its own browser here).
browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is not installed and this is not root: browser tests will be skipped"; fi; \
	fi
	@if [ ! -x /usr/bin/firefox-esr ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's firefox-esr for the Firefox browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq firefox-esr >/dev/null; \
	  else echo "firefox-esr is not installed and this is not root: Firefox browser tests will be skipped"; fi; \
	fi

# media/_fastpath.c (the SFU's send path in C) needs a C compiler and Python's headers; without
# them the install goes on and that path runs in Python (slower).  Installed first when root.
build-deps:
	@if ! command -v cc >/dev/null || [ ! -f "$$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing gcc and python3-dev to build media/_fastpath"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc python3-dev >/dev/null; \
	  else echo "no C compiler or Python headers: media/_fastpath is not built, the SFU sends from Python"; fi; \
	fi

# bench.sfu's all-C floor forwarder (bench/_sfu_floor.c) links Debian's libsrtp2, Janus's own;
# its test and the benchmark's reference_c_* figures are skipped, saying so, without it.
bench-deps: build-deps
	@if [ ! -f /usr/include/srtp2/srtp.h ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing libsrtp2-dev for the benchmark's all-C floor forwarder"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libsrtp2-dev >/dev/null; \
	  else echo "libsrtp2-dev is not installed and this is not root: the all-C floor forwarder is skipped"; fi; \
	fi

test: build-deps bench-deps install-test browser-deps
	$(BIN)/python -m mypy    # strict, over lienthong/ media/ mail/ web/ bench/ ([tool.mypy] in pyproject.toml)
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench-quick: bench-deps install-test
	$(BIN)/python -m bench.sfu --quick
	$(BIN)/python -m bench.mail --quick

clean:
	rm -rf $(VENV) state .pytest_cache
