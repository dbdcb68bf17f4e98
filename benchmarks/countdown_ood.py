"""How much a held-out countdown tier's base rate depends on the pre-training seed, when the tier
asks for no new search depth: variants of the three-number tiers (the operations listed in
another order, another operation set, no near-miss rule) and a reordered two-number tier,
defined as a user family through the public task API (`upt_jax.data.tasks.register_task`), and
measured greedily and at T = 1 on several pre-trained countdown models.

    python -m benchmarks.countdown_ood RUN_DIR [RUN_DIR ...] [--n 128] [--json OUT]

A ``RUN_DIR`` is a pre-training run (``python -m experiments.pretrain_countdown RUN_DIR SEED``) or
a shipped model directory (``upt_jax/bases/countdown``). Prints one row per model and the spread
(highest − lowest) per tier. docs/testbed.md ("Two more rebuilds, a larger sample, and the held-out
tiers against the seeds' range") has the numbers; ``cdv_3r``'s agreement over seeds is why the
family's held-out tier is now ``cd_3r`` (the same variant under the family's own tier name).
"""

from __future__ import annotations

import argparse
import json
import time

# name: (how many numbers, the operations in the order the search tries them, level, rule), as
# upt_jax.data.countdown.COUNTDOWN_TIERS; none of these prompts is in the pre-training corpus
VARIANTS = {
    "cdv_3r": (3, "*+", "ood", ""),  # cd_3's operations listed in the other order
    "cdv_3s": (3, "+-", "ood", ""),  # three numbers with + and −: no cut-off above the target
    "cdv_3a": (3, "+*", "ood", ""),  # cd_3 without its one-near-miss rule
    "cdv_2r": (2, "*-+", "ood", ""),  # cd_2's operations in reverse order
}


def register():
    """The variants as the family ``countdown_variants`` (registered once; idempotent)."""
    from upt_jax.data import countdown, tasks

    return tasks.register_task(
        tasks.TaskFamily(
            name="countdown_variants",
            tiers=tuple(tasks.TaskTier(n, lvl, f"{c} numbers with {ops}") for n, (c, ops, lvl, _) in VARIANTS.items()),
            make_record=lambda tier, seed, index: countdown.make_countdown_question(
                tier, seed, index, spec=VARIANTS[tier]
            ),
            verifier="countdown",
            description="Held-out variants of countdown's tiers at no new search depth.",
        ),
        replace=True,
    )


def measure(run_dirs, n: int = 128) -> dict:
    """``{run_dir: {tier: {"greedy", "avg@8", ...}}}``: greedy on ``n`` held-out questions per
    variant, avg@8 at T = 1 on the first ``n // 2`` (the base-model protocol's seed 4242)."""
    from upt_jax.studies.base_model import measure_tiers
    from upt_jax.train.run_model import load_run_model

    register()
    out = {}
    for run in run_dirs:
        t0 = time.perf_counter()
        model, tok, _, _ = load_run_model(run)
        out[run] = measure_tiers(
            model, tok, list(VARIANTS), protocol={"n_greedy": n, "n_sampled": n // 2}, template="zero"
        )
        print(
            run,
            f"({time.perf_counter() - t0:.0f} s)",
            json.dumps(
                {t: {k: round(v, 3) for k, v in r.items() if k == "greedy" or "@" in k} for t, r in out[run].items()}
            ),
            flush=True,
        )
    return out


def spread(measured: dict) -> dict:
    """``{tier: {rate: highest − lowest over the models}}``."""
    tiers = next(iter(measured.values()))
    return {
        t: {
            r: max(m[t][r] for m in measured.values()) - min(m[t][r] for m in measured.values())
            for r in ("greedy", "avg@8")
        }
        for t in tiers
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dirs", nargs="+")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    measured = measure(a.run_dirs, a.n)
    sp = spread(measured)
    for t, r in sp.items():
        print(
            f"{t}: spread over {len(measured)} models greedy {100 * r['greedy']:.1f}, avg@8 {100 * r['avg@8']:.1f} points"
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"measured": measured, "spread": sp}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
