"""Time to the first GRPO step of a tiny Hugging Face model, and the recompiles over a run.

    python -m benchmarks.first_step                      # cold, warm (persistent cache), no cache
    python -m benchmarks.first_step --steps 40 --runs cold warm

A tiny random HF Qwen2 directory with its own BPE tokenizer and chat template (the tests'
``make_hf_dir``) is written once; each run is a fresh process (``python -m benchmarks.first_step
--child``) that builds a ``Trainer`` from ``experiments/grpo.py`` with ``model.init=hf`` (8
questions × 8 rollouts of up to 64 tokens, the defaults) and trains ``--steps`` steps. Reported per
run: ``process_s`` (process start to the end of the first update: imports included),
``first_step_s`` (the trainer's ``time/first_step_s``: Trainer init to the end of the first
update), the compiles of the first step and of the steps after it (``compile/count``: XLA
compiles, persistent-cache hits excluded) and the steps that compiled.

Runs, in this order: ``before`` (no persistent cache, and each step's rows and prompts padded to
their own buckets: the code before ``upt_jax.train.shapes`` and the cache), ``off``
(``config.compile_cache=off``, one bucket per run), ``cold`` (an empty persistent cache in a temp
dir), ``warm`` (the same cache, a second process). The data: every training tier of the synthetic
task (prompts of several lengths), as ``experiments/grpo.py`` has it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULT = "FIRST_STEP_RESULT "


def child(req: dict) -> dict:
    """One run in this (fresh) process: ``req`` has ``hf_dir``, ``cache``, ``steps``, ``t_spawn``."""
    import numpy as np

    from experiments import grpo
    from upt_jax.train.trainer import Trainer

    c = grpo.get_config()
    c.run_dir = tempfile.mkdtemp(prefix="upt_first_step_")
    c.model.init, c.model.hf_dir, c.tokenizer, c.data.template = "hf", req["hf_dir"], req["hf_dir"], "chat"
    c.data.tiers = tuple(req.get("tiers") or c.data.tiers)
    c.train.steps = req["steps"]
    c.checkpoint.every = 0
    c.log.progress = False
    c.log.completions = False
    c.compile_cache = req["cache"]
    t = Trainer(c)
    if req.get("per_step_buckets"):  # the code before upt_jax.train.shapes: each step's own buckets
        t.prompt_floor = 0
    history = []
    try:
        for _ in range(req["steps"]):
            history.append(t.train_step())
            if len(history) == 1:
                process_s = time.time() - req["t_spawn"]
    finally:
        t.close()
    later = history[1:]
    return dict(
        process_s=round(process_s, 2),
        first_step_s=round(history[0]["time/first_step_s"], 2),
        first_update_s=round(history[0]["time/update_s"], 2),
        first_rollout_s=round(history[0]["time/rollout_s"], 2),
        first_compiles=int(history[0]["compile/count"]),
        first_cache_hits=int(history[0]["compile/cache_hits"]),
        first_compile_s=round(history[0]["compile/seconds"], 2),
        steps=len(history),
        later_compiles=int(sum(m["compile/count"] for m in later)),
        later_compile_s=round(sum(m["compile/seconds"] for m in later), 2),
        steps_compiled=[int(m["step"]) for m in later if m["compile/count"]],
        step_s=round(float(np.median([m["time/step_s"] for m in later])), 3) if later else None,
    )


def run_child(hf_dir: str, cache: str, steps: int, env: dict | None = None, **kw) -> dict:
    """``child`` in a fresh Python process; its result dict (``{"error": ...}`` on failure)."""
    req = dict(hf_dir=hf_dir, cache=cache, steps=steps, t_spawn=time.time(), **kw)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.first_step", "--child", json.dumps(req)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, **(env or {})),
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT) :])
    return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][-300:]}


def bench(steps: int = 40, runs=("before", "off", "cold", "warm"), cache_dir: str | None = None) -> dict:
    """The runs in order, in fresh processes, on one tiny HF directory and one cache directory."""
    from tests.train.test_hf_handoff import make_hf_dir

    hf_dir = make_hf_dir(tempfile.mkdtemp(prefix="upt_first_step_hf_"))
    cache = cache_dir or tempfile.mkdtemp(prefix="upt_first_step_xla_")
    out = {"steps": steps, "cache_dir": cache, "runs": {}}
    for r in runs:
        res = run_child(hf_dir, cache if r in ("cold", "warm") else "off", steps, per_step_buckets=r == "before")
        out["runs"][r] = res
        print(json.dumps({r: res}), flush=True)
    return out


def table(res: dict) -> list[str]:
    lines = [
        "| run | process start → first update s | Trainer init → first update s | first step compiles "
        "(cache hits) | compile s in step 1 | recompiles in steps 2–%d | median step s |" % res["steps"],
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in res["runs"].items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | | | | |")
            continue
        lines.append(
            f"| {name} | {r['process_s']} | {r['first_step_s']} | {r['first_compiles']} "
            f"({r['first_cache_hits']}) | {r['first_compile_s']} | {r['later_compiles']} "
            f"(steps {r['steps_compiled'] or '–'}) | {r['step_s']} |"
        )
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument(
        "--runs", nargs="+", default=["before", "off", "cold", "warm"], choices=["before", "off", "cold", "warm"]
    )
    ap.add_argument("--cache-dir", default=None, help="persistent cache directory (default: a fresh temp dir)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(RESULT + json.dumps(child(json.loads(a.child))), flush=True)
        return None
    res = bench(a.steps, a.runs, a.cache_dir)
    from upt_jax.hostinfo import host

    print(f"\nhost: {host()}")
    print("\n".join(table(res)))
    return res


if __name__ == "__main__":
    main()
