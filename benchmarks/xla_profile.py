"""Where XLA CPU spends a compiled program's time: op time by kind, from a profiler trace.

    python -m benchmarks.xla_profile --what update --config tiny     # the GRPO update step
    python -m benchmarks.xla_profile --what decode --config small    # the sampler, 32 × 64 tokens

The program runs a few times under ``jax.profiler.trace``; the trace's events on XLA's worker
threads are summed by op (``jax.profiler.ProfileData``: no TensorBoard needed) and grouped by
kind from the compiled HLO: ``matmul`` (YNNPACK / XNNPACK / oneDNN fusions and plain dots),
``transpose / copy``, ``element-wise`` (loop fusions), ``reduction`` and ``other``. Times are
thread time per call, summed over the threads that ran ops in parallel, so they add up to more
than the wall time on 2 cores; their shares say what kind of work the program is made of. Run it
pinned to one core (``taskset -c 0``) with one thread's worth of ops for the cleanest shares.
"""

from __future__ import annotations

import argparse
import collections
import glob
import re
import tempfile

import numpy as np

KINDS = ("matmul", "transpose / copy", "element-wise", "reduction", "other")


def op_kind(name: str, hlo_kind: str | None) -> str:
    """The kind of one op of the trace, by its fusion kind in the HLO and its name."""
    if any(s in name for s in ("ynn", "xnn", "onednn", "dot")) or hlo_kind == "kCustom":
        return "matmul"
    if "transpose" in name or name.startswith("copy"):
        return "transpose / copy"
    if "reduce" in name:
        return "reduction"
    if hlo_kind == "kLoop" or "fusion" in name:
        return "element-wise"
    return "other"


def hlo_fusions(hlo_text: str) -> dict[str, tuple[str, str]]:
    """``{op name: (result shape, fusion kind)}`` of a compiled module's fusions."""
    out = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (\S+) fusion\(.*?\), kind=(\w+)", line)
        if m:
            out[m.group(1)] = (m.group(2), m.group(3))
    return out


def _is_op(name: str) -> bool:
    """An HLO instruction's name (``ynn_fusion.3``, ``copy.262``), not the runtime's or Python's events
    (``ThunkExecutor::Execute``, ``Handle inputs``, ``$api.py:...``)."""
    if name.split(".")[0] in ("while", "conditional", "call"):  # containers: their ops are counted
        return False
    return re.fullmatch(r"[a-z][a-z0-9_\-]*(\.\d+)*", name) is not None


def profile_ops(run, calls: int = 3) -> dict[str, float]:
    """``{op name: seconds per call}`` summed over XLA's threads while ``run()`` runs ``calls`` times."""
    import jax

    run()
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d):
            for _ in range(calls):
                run()
        (path,) = glob.glob(f"{d}/**/*.xplane.pb", recursive=True)
        data = jax.profiler.ProfileData.from_file(path)
        total = collections.Counter()
        for plane in data.planes:
            for line in plane.lines:  # small programs run their ops on the calling thread too
                for ev in line.events:
                    if _is_op(ev.name):
                        total[ev.name] += ev.duration_ns
    return {k: v / calls / 1e9 for k, v in total.items()}


def summarise(ops: dict[str, float], fusions: dict[str, tuple[str, str]], top: int = 12) -> dict:
    kind = {name: op_kind(name, fusions.get(name, (None, None))[1]) for name in ops}
    by_kind = collections.Counter()
    for name, s in ops.items():
        by_kind[kind[name]] += s
    total = sum(by_kind.values()) or 1.0
    return dict(
        total_s=round(total, 4),
        kinds={k: dict(s=round(by_kind[k], 4), share=round(by_kind[k] / total, 3)) for k in KINDS},
        top=[
            dict(op=n, s=round(s, 5), shape=fusions.get(n, ("", ""))[0], kind=kind[n])
            for n, s in sorted(ops.items(), key=lambda kv: -kv[1])[:top]
        ],
    )


def update_program(config: str, batch: int, seq: int):
    """``(run, hlo)`` of the GRPO update step as ``benchmarks.update_bench`` times it."""
    import jax

    from benchmarks.update_bench import compiled_update, make_batch
    from upt_jax.models import init_model, preset

    model = init_model(preset(config), 0)
    compiled, state, b, _ = compiled_update(model, make_batch(model.cfg.vocab_size, batch, seq))
    box = [state]

    def run():
        box[0], m = compiled(box[0], b)
        jax.block_until_ready(m)

    return run, compiled.as_text()


def decode_program(config: str, batch: int, new_tokens: int):
    """``(run, "")`` of the sampler on ``batch`` prompts of 16 ids, ``new_tokens`` each (one stream)."""
    import jax

    from upt_jax.models import init_model, preset
    from upt_jax.sampling import Sampler, SamplingParams

    model = init_model(preset(config), 0)
    rng = np.random.RandomState(0)
    prompts = [rng.randint(1, model.cfg.vocab_size, 16).tolist() for _ in range(batch)]
    sampler = Sampler(model, pad_id=0, batch_bucket=8, streams=1)
    params = SamplingParams(max_new_tokens=new_tokens, temperature=1.0)
    run = lambda: sampler.generate(prompts, jax.random.key(0), params)
    return run, ""  # the sampler compiles inside generate: its ops are told apart by name only


def table(r: dict) -> list[str]:
    lines = [
        f"{r['what']} of `{r['config']}`; host: {r['host']}; op time per call summed over threads: {r['total_s']} s",
        "",
        "| kind | s per call | share |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {v['s']} | {v['share']:.1%} |" for k, v in r["kinds"].items()]
    lines += ["", "| op | kind | result shape | s per call |", "|---|---|---|---|"]
    lines += [f"| {t['op']} | {t['kind']} | `{t['shape']}` | {t['s']} |" for t in r["top"]]
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--what", choices=["update", "decode"], default="update")
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--batch", type=int, default=None, help="update: 8 rows; decode: 32 prompts")
    ap.add_argument("--length", type=int, default=None, help="update: 256 positions; decode: 64 new tokens")
    ap.add_argument("--calls", type=int, default=3)
    a = ap.parse_args(argv)
    from upt_jax.hostinfo import host

    if a.what == "update":
        run, hlo = update_program(a.config, a.batch or 8, a.length or 256)
    else:
        run, hlo = decode_program(a.config, a.batch or 32, a.length or 64)
    r = dict(what=a.what, config=a.config, host=host(), **summarise(profile_ops(run, a.calls), hlo_fusions(hlo)))
    print("\n".join(table(r)))
    return r


if __name__ == "__main__":
    main()
