"""Rollout + reward wall time of one HPT step with reward scoring overlapped (``rollout.overlap_chunks``).

    python -m benchmarks.overlap_bench                    # C = 1, 2, 4 side by side, 3 repeats
    python -m benchmarks.overlap_bench --chunks 1 2 --repeats 5

The HPT step of ``benchmarks.run_all`` (tiny model, 8 questions × 8 rollouts, 64 new tokens)
with ``rollout.overlap_chunks = C``. One trainer per C, all in this process; the repeats
interleave the C values (C=1, C=2, …, C=1, C=2, …) so that a busy shared machine slows all of
them alike. Each call is ``Trainer.rollouts`` (generate + decode + score) timed from outside.

The verifier must be slow enough to matter: the tiny random model never writes a ``\\boxed{}``
answer (the synthetic integer check rejects it in microseconds), so each rollout is scored by
the real math verifier (math-verify/sympy in the worker pool, under its time limit) on its own
text followed by a boxed answer made unique per rollout from a CRC of its text (math-verify
caches repeated pairs), in two kinds of answer, each against a fixed reference:

- ``fraction``: ``\\frac{a}{b}`` vs ``\\frac{1}{2}`` (about 1 ms per item here): cheap;
- ``radical``: ``\\frac{a\\sqrt{b}}{c}`` vs ``\\frac{\\sqrt{2}}{2}`` (about 30 ms per item here): a
  symbolic answer, as many MATH answers are.

One worker pool (``min(4, cores)`` processes) is shared by the trainers, one of them at a time.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


class BoxedMath:
    """The math verifier on each rollout with a unique boxed answer appended (see the module doc)."""

    ANSWERS = {  # kind: (answer from two integers, reference)
        "fraction": (lambda a, b: f"\\frac{{{a}}}{{{b}}}", "\\frac{1}{2}"),
        "radical": (lambda a, b: f"\\frac{{{a}\\sqrt{{{b}}}}}{{{b + 1}}}", "\\frac{\\sqrt{2}}{2}"),
    }

    def __init__(self, pool, kind: str = "radical"):
        from upt_jax.rewards import Verifier

        self.inner = Verifier("math", pool=pool)
        self.answer, self.gold = self.ANSWERS[kind]

    def scores(self, outputs, golds):
        import zlib

        def boxed(o):
            h = zlib.crc32(o.encode())
            return f"{o} so \\boxed{{{self.answer(2 + h % 9973, 3 + (h >> 14) % 9973)}}}"

        return self.inner.scores([boxed(o) for o in outputs], [self.gold] * len(outputs))

    def metrics(self):
        return self.inner.metrics()

    def close(self):
        self.inner.close()


def bench(
    chunks=(1, 2, 4),
    repeats: int = 3,
    answers=("fraction", "radical"),
    questions: int = 8,
    n: int = 8,
    new_tokens: int = 64,
) -> dict:
    import jax

    from benchmarks.common import hpt_bench_config
    from upt_jax.rewards.pool import VerifierPool
    from upt_jax.train.trainer import Trainer

    pool = VerifierPool()
    trainers = {}
    out = dict(
        questions=questions,
        n=n,
        new_tokens=new_tokens,
        repeats=repeats,
        workers=pool.num_workers,
        results=[],
        reasons={},
    )
    try:
        for c in chunks:
            cfg = hpt_bench_config(
                f"upt_bench_overlap{c}_", questions=questions, n=n, new_tokens=new_tokens, overlap_chunks=c
            )
            trainers[c] = Trainer(cfg)
            trainers[c].verifier.close()
        records = next(iter(trainers[chunks[0]].dataset))
        prompts = [trainers[chunks[0]].prompt_ids(r["question"]) for r in records]
        for kind in answers:
            for t in trainers.values():
                t.verifier = BoxedMath(pool, kind)
            rows = {c: [] for c in chunks}
            for r in range(repeats + 1):  # r = 0: warm-up (compiles, worker start-up)
                for c, t in trainers.items():
                    timing = dict(rollout_s=0.0, rollout_compile_s=0.0, reward_s=0.0)
                    t0 = time.perf_counter()
                    groups = t.rollouts(records, prompts, jax.random.key(r), timing)
                    wall = time.perf_counter() - t0
                    assert len(groups) == questions
                    if r:
                        rows[c].append(dict(wall_s=wall, **timing))
            out["reasons"][kind] = trainers[chunks[0]].verifier.metrics()
            walls = {c: float(np.mean([x["wall_s"] for x in rows[c]])) for c in chunks}
            base = walls.get(1, walls[chunks[0]])  # the serial C = 1 (else the first C given)
            for c in chunks:
                mean = lambda k: float(np.mean([x[k] for x in rows[c]]))
                out["results"].append(
                    dict(
                        answers=kind,
                        chunks=c,
                        wall_s=round(walls[c], 3),
                        wall_min_s=round(min(x["wall_s"] for x in rows[c]), 3),
                        rollout_s=round(mean("rollout_s"), 3),
                        reward_s=round(mean("reward_s"), 3),
                        reward_overlap_s=round(mean("reward_overlap_s"), 3),
                        speedup_vs_c1=round(base / walls[c], 2),
                    )
                )
    finally:
        for t in trainers.values():
            t.close()
        pool.close()
    return out


def table(r: dict) -> list[str]:
    lines = [
        "| verifier answers | overlap_chunks C | rollout + reward wall s | min s | rollout s (Σ generation) "
        "| reward s (Σ scoring) | reward hidden s | speed-up vs C=1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for x in r["results"]:
        lines.append(
            f"| {x['answers']} | {x['chunks']} | {x['wall_s']} | {x['wall_min_s']} | {x['rollout_s']} | "
            f"{x['reward_s']} | {x['reward_overlap_s']} | {x['speedup_vs_c1']}× |"
        )
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--answers", nargs="+", default=["fraction", "radical"], choices=sorted(BoxedMath.ANSWERS))
    a = ap.parse_args(argv)
    r = bench(tuple(a.chunks), a.repeats, tuple(a.answers))
    print(json.dumps(r, indent=2))
    print("\n".join(table(r)))
    return r


if __name__ == "__main__":
    main()
