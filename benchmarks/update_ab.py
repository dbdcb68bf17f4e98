"""A/B of the GRPO update step: the code as it is against one function of upt_jax replaced.

    python -m benchmarks.update_ab --patch upt_jax.models.transformer.attend=benchmarks.variants.attention_flash_bwd:attend
    python -m benchmarks.update_ab --patch MODULE.NAME=MODULE:NAME --config tiny small --rounds 30

Both arms are the `update_bench` step (`update_bench.compiled_update`: the trainer's
`make_train_step` with GRPO and AdamW) on one random model of the preset and one batch
(`update_bench.make_batch`, 8 × 256 by default): arm A compiled from the code as it is, arm B
compiled while ``--patch`` replaces ``MODULE.NAME`` (an attribute the model code looks up at trace
time, e.g. ``upt_jax.models.transformer.attend``) by ``MODULE:NAME``. Then:

* the same step from copies of the same state in each arm: the loss of each and the largest
  difference of any parameter after it (a variant meant to change only speed should show float
  rounding only);
* ``--rounds`` rounds after two warm-up calls each, every round one call of each arm, the order
  alternating from round to round; the speed-up of a round is A's time over B's (above 1: B is
  faster). Reported: each arm's median time and the speed-up's median and interquartile range
  over the rounds, the measure for a host whose per-call noise is as large as the effect;
* each arm's compiled temporaries (XLA's ``memory_analysis()``, MiB).

The variants tried by earlier sessions live in ``benchmarks/variants/``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import statistics
import time

from benchmarks.common import in_turns, ratio_stats
from benchmarks.update_bench import compiled_update, make_batch


def resolve(spec: str):
    """``"pkg.module:name"`` → the object."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"{spec!r}: expected MODULE:NAME")
    return getattr(importlib.import_module(module), name)


@contextlib.contextmanager
def patched(target: str, replacement):
    """Within the block, ``target`` (``"pkg.module.name"``, an existing attribute) is ``replacement``."""
    module, _, name = target.rpartition(".")
    mod = importlib.import_module(module)
    if not hasattr(mod, name):
        raise AttributeError(f"{target}: {module} has no attribute {name!r}")
    before = getattr(mod, name)
    setattr(mod, name, replacement)
    try:
        yield
    finally:
        setattr(mod, name, before)


def paired_rounds(call_a, call_b, rounds: int, warmup: int = 2) -> dict:
    """Time ``call_a`` and ``call_b`` (each returns its own seconds) once per round, alternating
    which goes first (`benchmarks.common.in_turns`); ``{"a_ms", "b_ms", "speedup", "iqr",
    "rounds"}`` (median times; speed-up = the median of A / B per round)."""
    ta, tb = in_turns(call_a, call_b, rounds, warmup)
    speedup, iqr = ratio_stats(ta, tb)
    return dict(
        a_ms=round(statistics.median(ta) * 1e3, 2),
        b_ms=round(statistics.median(tb) * 1e3, 2),
        speedup=speedup,
        iqr=iqr,
        rounds=rounds,
    )


def bench(config: str, target: str, replacement_spec: str, rounds: int, batch: int = 8, seq: int = 256) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from upt_jax.models import init_model, preset

    model = init_model(preset(config), 0)
    batch_np = make_batch(model.cfg.vocab_size, batch, seq)
    arm_a, state_a, batch_, compile_a = compiled_update(model, batch_np)
    with patched(target, resolve(replacement_spec)):
        arm_b, state_b, _, compile_b = compiled_update(model, batch_np)

    def copy(tree):  # the step donates its state, and both arms' states hold the model's own buffers
        return jax.tree.map(jnp.copy, tree)

    (sa, ma), (sb, mb) = arm_a(copy(state_a), batch_), arm_b(copy(state_b), batch_)
    diff = max(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
        for x, y in zip(jax.tree.leaves(sa.params), jax.tree.leaves(sb.params))
    )

    def timed(arm, state):
        """One call of ``arm`` per call, each from the state the previous one returned; its seconds."""
        live = [copy(state)]

        def call():
            t0 = time.perf_counter()
            out = arm(live[0], batch_)
            jax.block_until_ready(out)
            live[0] = out[0]
            return time.perf_counter() - t0

        return call

    res = paired_rounds(timed(arm_a, state_a), timed(arm_b, state_b), rounds)
    return dict(
        config=config,
        batch=batch,
        seq=seq,
        patch=f"{target}={replacement_spec}",
        loss_a=float(ma["loss"]),
        loss_b=float(mb["loss"]),
        max_param_diff=diff,
        compile_s=[round(compile_a, 2), round(compile_b, 2)],
        temp_mib=[round(arm.memory_analysis().temp_size_in_bytes / 2**20, 1) for arm in (arm_a, arm_b)],
        **res,
    )


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| config | batch × seq | A ms (median) | B ms (median) | speed-up A/B (median) | IQR | rounds "
        "| loss A / B | max parameter difference | XLA temporaries MiB A / B |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['batch']} × {r['seq']} | {r['a_ms']} | {r['b_ms']} | {r['speedup']}× | "
            f"{r['iqr'][0]}–{r['iqr'][1]} | {r['rounds']} | {r['loss_a']:.6g} / {r['loss_b']:.6g} | "
            f"{r['max_param_diff']:.2g} | {r['temp_mib'][0]} / {r['temp_mib'][1]} |"
        )
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patch", required=True, help="MODULE.NAME=MODULE:NAME (the attribute replaced in arm B)")
    ap.add_argument("--config", nargs="+", default=["tiny"])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args(argv)
    target, sep, spec = a.patch.partition("=")
    if not sep:
        ap.error("--patch: expected MODULE.NAME=MODULE:NAME")
    rows = [bench(c, target, spec, a.rounds, a.batch, a.seq) for c in a.config]
    from upt_jax.hostinfo import host

    print(f"\n{a.patch}; host: {host()}")
    print("\n".join(table(rows)))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
