# Two set-up commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv on first use and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip -q --disable-pip-version-check
DEMO_OUT ?= demo-output

.PHONY: demo test test-slow bench clean

$(VENV)/.base: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PIP) install -e '.[dev]'
	touch $@

demo: $(VENV)/.base
	$(PIP) install -e '.[augment]' && rm -rf $(DEMO_OUT)/dataset && $(VENV)/bin/synthex render --out $(DEMO_OUT)/dataset

test: $(VENV)/.dev
	$(PY) -m pytest -m "not slow" -q

test-slow: $(VENV)/.dev
	$(PY) -m pytest -m slow -q

bench: $(VENV)/.dev
	$(PY) benchmarks/speed.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
