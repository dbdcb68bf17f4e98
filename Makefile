# `make demo` and `make test` each create .venv if missing and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# the test suite runs on 8 simulated CPU devices (sharding tests); `make demo` on the real device(s)
TEST_XLA_FLAGS ?= --xla_force_host_platform_device_count=8

.PHONY: demo test test-slow format clean bench-tunix-env bench-trl-env

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
	XLA_FLAGS=$(TEST_XLA_FLAGS) $(PY) -m pytest -q -n 2 -m "not slow" tests $(PYTEST_ARGS)

test-slow: $(VENV)/.test
	XLA_FLAGS=$(TEST_XLA_FLAGS) $(PY) -m pytest -q -m slow tests $(PYTEST_ARGS)

# the one formatter (ruff.toml): 4 spaces, double quotes, 120 columns; notebooks/ go through jupytext
format: $(VENV)/bin/python
	$(PY) -m pip install -q "ruff==0.17.6"
	$(PY) -m ruff format .

# Tunix (PyPI google-tunix) for the side-by-side columns of benchmarks/ (benchmarks/tunix_bench.py
# runs in it as a subprocess); its own venv, CPU jaxlib, never torch. upt_jax's venv never imports it.
TUNIX_VENV ?= .venv-tunix
TUNIX_PIP ?= "google-tunix==0.1.7" "jax[cpu]==0.10.2" "flax==0.12.8" optax

$(TUNIX_VENV)/.tunix:
	$(PYTHON) -m venv $(TUNIX_VENV)
	$(TUNIX_VENV)/bin/python -m pip install -q --upgrade pip
	$(TUNIX_VENV)/bin/python -m pip install -q $(TUNIX_PIP)
	@if $(TUNIX_VENV)/bin/python -c "import torch" 2>/dev/null; then \
		echo "$(TUNIX_VENV) pulled in torch; the Tunix env must stay JAX-only" >&2; exit 1; fi
	$(TUNIX_VENV)/bin/python -c "import tunix.generate.sampler, tunix.models.qwen2.model, tunix.rl.trainer"
	touch $@

bench-tunix-env: $(TUNIX_VENV)/.tunix

# TRL (PyPI trl, torch 2.13 CPU) for the whole-RL-step comparison (benchmarks/rl_step_bench.py runs
# benchmarks/trl_bench.py in it as a subprocess); its own venv, never upt_jax's
TRL_VENV ?= .venv-trl
TRL_PIP ?= trl "torch==2.13.0"

$(TRL_VENV)/.trl:
	$(PYTHON) -m venv $(TRL_VENV)
	$(TRL_VENV)/bin/python -m pip install -q $(TRL_PIP)
	$(TRL_VENV)/bin/python -c "import trl, torch; trl.GRPOTrainer"
	touch $@

bench-trl-env: $(TRL_VENV)/.trl

clean:
	rm -rf $(VENV) runs
