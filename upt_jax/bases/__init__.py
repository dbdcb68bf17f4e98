"""The testbed's shipped base models: one directory per task family, in the package.

Each directory holds ``model.json`` (architecture, tokenizer, prompt template), ``model.safetensors``
(the weights) and ``record.json`` (the weights' SHA-256, the step and the command that made them,
and the per-tier rates measured under `upt_jax.studies.base_model.PROTOCOL`). Anything that reads
a run directory reads one (``model.init=checkpoint``, ``upt eval --run-dir``, a teacher), so every
study and ``make demo`` starts from the same base everywhere:

    from upt_jax import bases
    config.model.init, config.model.checkpoint = "checkpoint", bases.base_dir("arith_hint")

`base_dir` checks the weights against the recorded checksum. ``python -m experiments.pretrain_hint
--check RUN_DIR`` rebuilds a base and compares it with the record (docs/testbed.md).
"""

from __future__ import annotations

import json
import os

__all__ = ["names", "base_dir", "base_record"]

_ROOT = os.path.dirname(os.path.abspath(__file__))


def names() -> list[str]:
    """The shipped base models (directories with a ``record.json``)."""
    return sorted(d for d in os.listdir(_ROOT) if os.path.isfile(os.path.join(_ROOT, d, "record.json")))


def _dir(name: str) -> str:
    if name not in names():
        raise KeyError(f"no shipped base model {name!r}; shipped: {names()}")
    return os.path.join(_ROOT, name)


def base_record(name: str) -> dict:
    """``record.json`` of the shipped base model ``name``."""
    with open(os.path.join(_dir(name), "record.json")) as f:
        return json.load(f)


def base_dir(name: str, *, verify: bool = True) -> str:
    """The directory of the shipped base model ``name``; with ``verify`` its weights' SHA-256 is
    checked against the record first (``CheckpointError`` when they differ)."""
    d = _dir(name)
    if verify:
        from upt_jax.train.run_model import verify_weights

        verify_weights(d)
    return d
