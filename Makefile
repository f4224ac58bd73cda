# smartpark — the two commands: `make demo` and `make test`.
# Both create .venv and install everything they need from the package index.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYX    := $(wildcard fast/*.pyx fast/*.pxd fast/*.pxi)
PYTEST_ARGS ?=

.PHONY: all demo test lint build venv clean bench

all: build

$(STAMP): pyproject.toml setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

# Rebuild the Cython extensions in place whenever a .pyx changes.
$(VENV)/.built-stamp: $(STAMP) $(PYX)
	$(PY) setup.py --quiet build_ext --inplace
	@touch $@

build: $(VENV)/.built-stamp

lint: build
	$(PY) -m ruff check .
	$(PY) -m smartpark.tools.checks
	$(PY) tests/firmware/typecheck.py
	$(PY) -m mypy hub

# The suite runs twice: as built, and pure (SMARTPARK_PUREPYTHON=1: every compiled twin
# replaced by its reference; tests marked `compiled` are left out of that pass). A test
# marked `once` runs in one pass: the first, or the pure one when also marked `pure_pass`.
# The two passes run side by side -- much of each is waiting on nodes, sockets and sleeps --
# and the pure pass's output follows the first's.
PURE_LOG := $(VENV)/pure-pass.log

test: lint
	@SMARTPARK_PUREPYTHON=1 $(PY) -m pytest -m "not compiled and (not once or pure_pass)" -q \
	    $(PYTEST_ARGS) tests > $(PURE_LOG) 2>&1 & pure=$$!; \
	$(PY) -m pytest -m "not pure_pass" $(PYTEST_ARGS); rc=$$?; \
	wait $$pure; prc=$$?; \
	echo "==== the pure-Python pass (SMARTPARK_PUREPYTHON=1) ===="; cat $(PURE_LOG); \
	test $$rc -eq 0 && test $$prc -eq 0

demo: build
	$(PY) -m smartpark.tools.cli demo

bench: build
	$(PY) -m pytest benchmarks --benchmark-only

clean:
	rm -rf build $(VENV) fast/*.c fast/*.so *.egg-info
