"""A comparison's evaluations: each model evaluated once per setting, the result cached beside it.

`evaluate_run` samples a run directory's checkpoint (or a shipped model directory, `upt_jax.bases`)
on the comparison's questions and caches ``{suite: SuiteResult dict}`` (every question's correct
count included, for the paired differences) under a hash of the settings, the step and a shipped
model's checksum, so a rerun, or a rebuilt base, never reuses a stale number.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Sequence

log = logging.getLogger(__name__)

__all__ = [
    "eval_settings",
    "SamplerPool",
    "evaluate_run",
    "base_eval",
    "checkpoint_steps",
    "is_weights_dir",
    "weights_sha",
]


def is_weights_dir(d: str) -> bool:
    """``d`` is a shipped model directory (``model.json`` + ``model.safetensors``, no checkpoints)."""
    from upt_jax.train import run_model

    return os.path.isdir(d) and run_model.is_weights_dir(d)


def weights_sha(d: str) -> str | None:
    """A shipped model's weights checksum, as its ``record.json`` records it (else computed); None
    for a run directory."""
    if not is_weights_dir(d):
        return None
    from upt_jax.train.run_model import RECORD_FILE, WEIGHTS_FILE, file_sha256

    record = os.path.join(d, RECORD_FILE)
    if os.path.isfile(record):
        with open(record) as f:
            sha = json.load(f).get("weights_sha256")
        if sha:
            return sha
    return file_sha256(os.path.join(d, WEIGHTS_FILE))


def eval_settings(ec, suites: Sequence[str], n: int, k: int) -> dict:
    """What an evaluation depends on (its cache key): tiers, questions per tier, samples per
    question, sampling settings and seed, and ``data_seed`` when the config sets one."""
    out = dict(
        suites=list(suites),
        n=int(n),
        k=int(k),
        temperature=float(ec.temperature),
        max_new_tokens=int(ec.max_new_tokens),
        seed=int(ec.seed),
    )
    if ec.get("data_seed") is not None:  # a validation split (default: DEFAULT_EVAL_SEED's questions)
        out["data_seed"] = int(ec.data_seed)
    return out


class SamplerPool:
    """One `Sampler` per model shape, reused across evaluations (its executables are compiled
    once per shape bucket; each evaluation passes its own parameters)."""

    def __init__(self):
        self._samplers = {}

    def get(self, model, pad_id: int):
        from flax import nnx

        from upt_jax.sampling import Sampler

        key = (json.dumps(model.cfg.to_hf_dict(), sort_keys=True, default=str), pad_id)
        if key not in self._samplers:
            self._samplers[key] = Sampler(model, pad_id=pad_id)
        return self._samplers[key], nnx.state(model)


def evaluate_run(
    run_dir: str,
    settings: dict,
    *,
    step: int | None = None,
    cache: bool = True,
    progress: bool = False,
    samplers: SamplerPool | None = None,
    cache_dir: str | None = None,
) -> dict:
    """``{suite: SuiteResult.to_dict()}`` of the run's checkpoint ``step`` (default latest; a
    shipped model directory has one), cached in ``<cache_dir>/<hash>.json`` (default
    ``<run_dir>/eval``), the hash of the settings, the step and a shipped model's checksum. A
    shipped model directory (`is_weights_dir`, package data) is never written to: without a
    ``cache_dir`` its evaluation is not cached."""
    import jax

    from upt_jax.eval.evaluate import DEFAULT_EVAL_SEED, evaluate, synthetic_suites
    from upt_jax.eval.report import results_to_json
    from upt_jax.train.run_model import load_run_model

    ident = dict(settings, step=step)
    sha = weights_sha(run_dir)
    if sha is not None:
        ident["weights_sha256"] = sha
    tag = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
    path = os.path.join(cache_dir or os.path.join(run_dir, "eval"), f"{tag}.json")
    cache = cache and (cache_dir is not None or sha is None)  # never write into a shipped model's directory
    if cache and os.path.exists(path):
        try:
            with open(path) as f:
                return json.load(f)["results"]
        except (OSError, ValueError, KeyError) as e:  # a cache cut short by a crash: recompute
            log.warning("ignoring unreadable evaluation cache %s: %s", path, e)
    model, tok, cfg, got = load_run_model(run_dir, step=step)
    suites = synthetic_suites(settings["suites"], n=settings["n"], seed=settings.get("data_seed", DEFAULT_EVAL_SEED))
    sampler, params = (samplers or SamplerPool()).get(model, tok.pad_id)
    res = evaluate(
        model,
        tok,
        suites,
        k=settings["k"],
        temperature=settings["temperature"],
        max_new_tokens=settings["max_new_tokens"],
        key=jax.random.key(settings["seed"]),
        template=cfg.data.get("template", "zero"),
        default_verifier="integer",
        progress=progress,
        sampler=sampler,
        params=params,
    )
    out = results_to_json({s: r for s, r in res.items()})
    if not cache:
        return out
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(dict(settings=settings, step=got, results=out), f)
    os.replace(tmp, path)
    return out


def base_eval(config, base_dir: str, settings: dict, samplers: SamplerPool | None, step: int | None = None) -> dict:
    """The base model's evaluation, cached in the comparison's run directory when the base is a
    shipped model directory (the package's files stay as shipped)."""
    cache_dir = os.path.join(config.run_dir, "base_eval") if is_weights_dir(base_dir) else None
    return evaluate_run(base_dir, settings, step=step, samplers=samplers, cache_dir=cache_dir)


def checkpoint_steps(run_dir: str) -> list[int]:
    ck = os.path.join(run_dir, "checkpoints")
    return sorted(int(p) for p in os.listdir(ck) if p.isdigit()) if os.path.isdir(ck) else []
