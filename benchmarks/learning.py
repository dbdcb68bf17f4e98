"""The learning checks of issue #22: every regime trained briefly from the shipped ``arith_hint``
base, judged by the metric it exists to move, as a paired difference with its SE over seeds
(`upt_jax.studies.learning`; the table in docs/learning.md).

    python -m benchmarks.learning RUN_DIR                       # every check, 3 seeds
    python -m benchmarks.learning RUN_DIR --only grpo,dpo --seeds 3 --doc docs/learning.md
    python -m benchmarks.learning RUN_DIR --smoke               # a tiny random base, 1 step: the plumbing

Resumable: finished runs are not retrained, evaluations are cached, and results.json keeps the
checks of earlier calls (a rerun of one check replaces its entry).
"""

from __future__ import annotations

import argparse
import logging


def smoke_base(run_dir: str) -> dict:
    """A tiny random base (1 layer, d = 32) pre-trained for 2 steps into ``<run_dir>/base``: the
    plumbing, in seconds (as `experiments/testbed.py:smoke`)."""
    return dict(
        run_dir=f"{run_dir}/base",
        module="pretrain_hint",
        arg="",
        train_if_missing=True,
        label="tiny base",
        overrides=(
            ("train.steps", 2),
            ("train.questions_per_step", 8),
            ("data.corpus.n_docs", 32),
            ("checkpoint.every", 2),
            ("log.progress", False),
            (
                "model.overrides",
                dict(num_layers=1, hidden_size=32, intermediate_size=64, num_heads=2, num_kv_heads=1, head_dim=16),
            ),
        ),
    )


def main(argv=None) -> dict:
    from upt_jax.studies import learning, learning_run

    p = argparse.ArgumentParser(prog="python -m benchmarks.learning", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument(
        "--only", default=None, help="comma-separated check names: " + ",".join(c.key for c in learning.CHECKS)
    )
    p.add_argument("--seeds", type=int, default=3, help="training seeds 0..N-1 (default 3)")
    p.add_argument("--doc", default=None, help="also write the table into this page (e.g. docs/learning.md)")
    p.add_argument("--smoke", action="store_true", help="a tiny random base and 1 step per check")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    base = smoke_base(args.run_dir) if args.smoke else None
    scale = learning.SMOKE if args.smoke else learning.FULL
    results = learning_run.run_study(
        args.run_dir, only=args.only, seeds=tuple(range(args.seeds)), scale=scale, base=base, doc=args.doc
    )
    with open(f"{args.run_dir}/LEARNING.md") as f:
        print(f.read())
    return results


if __name__ == "__main__":
    main()
