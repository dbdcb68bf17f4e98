# `make demo` and `make test` each create .venv if missing and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
export XLA_FLAGS ?= --xla_force_host_platform_device_count=8

.PHONY: demo test test-slow clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.core: setup.py | $(VENV)/bin/python
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.test: setup.py $(VENV)/.core
	$(PY) -m pip install -q -e ".[test]"
	touch $@

demo: $(VENV)/.core
	$(PY) -m upt_jax.cli demo

test: $(VENV)/.test
	$(PY) -m pytest -q -n 2 -m "not slow" tests $(PYTEST_ARGS)

test-slow: $(VENV)/.test
	$(PY) -m pytest -q -m slow tests $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs
