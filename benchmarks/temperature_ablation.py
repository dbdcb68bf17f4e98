"""Issue #17's rollout-temperature fix, measured on the testbed: the GRPO learning check
(`upt_jax.studies.learning`, its budget and tiers) with rollouts sampled at T = 0.7, training
π_θ at 0.7 (the fix: log-probs, ratios, entropies at the sampling temperature, as verl and TRL)
against training it at 1 (upt_jax before the fix: ``rollout.train_temperature=1``, behaviour
log-probs recomputed at 1 so each update is still at ratio 1). Each arm is paired with the base,
and the two arms with each other, seed by seed on the same held-out questions.

    python -m benchmarks.temperature_ablation RUN_DIR [--seeds 5] [--temperature 0.7]

Resumable (the learning checks' runs and cached evaluations); writes ``RUN_DIR/temperature.json``
and prints the rows (docs/testbed.md, "Method fixes: their measured effect").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os


def arms(temperature: float = 0.7) -> dict:
    """``{key: Check}``: the GRPO check sampling at ``temperature``, trained at it (``fix``) and
    at 1 (``before``)."""
    from upt_jax.studies import learning

    grpo = learning.checks("grpo")[0]
    at, t = (("rollout.temperature", temperature),), f"{temperature:g}".replace(".", "p")  # keys: no dots
    return {
        "fix": dataclasses.replace(
            grpo, key=f"grpo_t{t}", label=f"GRPO at T = {temperature:g}", overrides=grpo.overrides + at
        ),
        "before": dataclasses.replace(
            grpo,
            key=f"grpo_t{t}_train1",
            label=f"GRPO at T = {temperature:g}, trained at 1",
            overrides=grpo.overrides + at + (("rollout.train_temperature", 1.0),),
        ),
    }


def fix_vs_before(run_dir: str, checks: dict, seeds, scale) -> dict:
    """The paired row fix − before on the check's targeted tier, seed by seed (each seed's
    ``before`` run is the other's baseline, on the same questions and evaluation settings)."""
    from upt_jax.eval.paired import accuracy_by_id
    from upt_jax.studies import learning, learning_run
    from upt_jax.studies.comparison_eval import eval_settings, evaluate_run

    check = checks["fix"]
    tier = learning.target_tier(check)
    c = learning.study_config(check, run_dir, base=learning_run.shipped_base(check.family), seeds=seeds, scale=scale)
    settings = eval_settings(c.eval, [tier], scale.n_eval, scale.k)
    acc = {
        arm: [accuracy_by_id(evaluate_run(os.path.join(run_dir, ch.key, f"seed{s}"), settings)[tier]) for s in seeds]
        for arm, ch in checks.items()
    }
    return learning_run.paired_row(f"{tier} accuracy, fix − before", acc["before"], acc["fix"])


def main(argv=None) -> dict:
    from upt_jax.studies import learning, learning_run

    p = argparse.ArgumentParser(prog="python -m benchmarks.temperature_ablation", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--temperature", type=float, default=0.7)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    seeds, checks = tuple(range(a.seeds)), arms(a.temperature)
    out = {k: learning_run.run_check(ch, a.run_dir, seeds=seeds) for k, ch in checks.items()}
    out["fix_vs_before"] = fix_vs_before(a.run_dir, checks, seeds, learning.FULL)
    with open(os.path.join(a.run_dir, "temperature.json"), "w") as f:
        json.dump(out, f, indent=1)
    for k in checks:
        for row in out[k]["rows"]:
            print(
                f"{checks[k].label}: {row['metric']}: {100 * row['base']:.1f} → {100 * row['after']:.1f} %, "
                f"{100 * row['diff']:+.1f} ± {100 * row['se']:.1f}"
            )
    row = out["fix_vs_before"]
    print(f"{row['metric']}: {100 * row['diff']:+.1f} ± {100 * row['se']:.1f} points ({row['seeds']} seeds)")
    return out


if __name__ == "__main__":
    main()
