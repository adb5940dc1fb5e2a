# Developer entry points. Each target installs what it needs into .venv/ (and .cache/ for node), so a
# fresh clone needs only python3 (and npm for the hub tests).
# Another interpreter gets a venv of its own: make test PYTHON=/path/to/python3.10 VENV=.venv310 (a venv is made
# once, with the interpreter it was first made with).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
NODE_PREFIX := .cache/node
# The suite waits a lot (servers, kernels, links that hold, timeouts), so it runs in parallel, with more workers
# than cores: on this 2-core machine (Python 3.11) 3 workers took 151 s, 4 took 138-142 s, 6 took 151 s (230, 241,
# 280 CPU s: each worker starts its own demo Jupyter server); Python 3.10 takes 164 s with 4. --dist loadgroup keeps the tests that share a module's real hub,
# tinyproxy or nginx on one worker, which starts it once (tests/conftest.py); every other test goes where a
# worker is free.
WORKERS ?= 4
# More pytest options, e.g. PYTEST_ARGS="--event-loop uvloop" (the loop the in-process tests run on; default asyncio).
PYTEST_ARGS ?=
# PYTHONDONTWRITEBYTECODE emptied: the tests start ~100 Python processes (workers, proxies, servers), and where the
# machine sets it (this one does) each compiled this repository's modules and rewrote the tests' asserts again.
PYTEST := PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -n $(WORKERS) --dist loadgroup $(PYTEST_ARGS)

.PHONY: run demo test test-fast bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

run: $(PY)
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-demo.txt
	$(PY) proxy.py $(ARGS)

demo: $(PY)
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-demo.txt
	$(PY) proxy.py --demo

test-fast: $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PYTEST) -m "not hub"

test: $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@if command -v npm >/dev/null; then npm install --silent --no-audit --no-fund --prefix $(NODE_PREFIX) configurable-http-proxy; fi
	PATH="$(CURDIR)/$(NODE_PREFIX)/node_modules/.bin:$$PATH" $(PYTEST)

bench: $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .cache
