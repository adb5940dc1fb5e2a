# Developer entry points. Each target installs what it needs into .venv/ (and .cache/ for node), so a
# fresh clone needs only python3 (and npm for the hub tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NODE_PREFIX := .cache/node

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
	$(PY) -m pytest -m "not hub"

test: $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@if command -v npm >/dev/null; then npm install --silent --no-audit --no-fund --prefix $(NODE_PREFIX) configurable-http-proxy; fi
	PATH="$(CURDIR)/$(NODE_PREFIX)/node_modules/.bin:$$PATH" $(PY) -m pytest

bench: $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .cache
