"""The base model of the countdown family (`upt_jax.data.countdown`, tiers ``cd_*``): plain
language modelling on its corpus (search-trace demonstrations of `countdown.CORPUS_TIERS`, 40 %
of the RL tier's with a slip, and one-step facts) at a constant learning rate, stopped once the
corpus's tiers are learned (`upt_jax.studies.base_model.pretrain_until`), then shipped and
checked exactly as ``arith_hint``'s (`experiments/pretrain_hint.py`, whose command line this is):

    python -m experiments.pretrain_countdown [RUN_DIR] [SEED]     # → runs/pretrain_countdown
    python -m experiments.pretrain_countdown RUN_DIR --ship       # measure it, write upt_jax/bases/countdown
    python -m experiments.pretrain_countdown RUN_DIR --check      # a rebuild against the shipped record

Everything but the corpus and the watched tiers is `experiments/pretrain_hint.py`'s (model shape,
learning rate, batch, warmup, the stopping rule's thresholds and cool-down).
"""

import sys

from upt_jax.config_files import sibling
from upt_jax.data import countdown

pretrain_hint = sibling(__file__, "pretrain_hint")  # loaded by path, as pretrain_hint loads pretrain_tiny

FAMILY, BASE = "countdown", "upt_jax/bases/countdown"
RUN_DIR = "runs/pretrain_countdown"
# the tiers the stopping criterion watches (greedily): cd_3's demonstrations slip 40 % of the time
# (countdown.CORPUS_SLIPS), which lowers its sampled accuracy, not its greedy one
STOP_TIERS = countdown.COUNTDOWN.tiers_at("base", "rl")


def get_config(arg: str | None = None):
    c = pretrain_hint.get_config()
    c.name, c.run_dir = "pretrain_countdown", RUN_DIR
    c.data.tiers = c.data.corpus.tiers = countdown.CORPUS_TIERS
    return c


def criterion():
    """`pretrain_hint`'s rule, except the transition: countdown's tiers are learned gradually, not
    abruptly (the first pilot, docs/testbed.md: greedy ``cd_3`` 0.08 → 0.31 over steps 400–1600 at
    the constant rate), so phase 1 waits for 0.6 on every watched tier (or ``max_steps``) before the
    cool-down; the 0.3 transition of ``arith_hint`` ended the pilot's phase 1 at 1,600 steps and its
    cool-down short of the target (``cd_3p`` 83 % greedy)."""
    import dataclasses

    return dataclasses.replace(pretrain_hint.criterion(), tiers=STOP_TIERS, transition=0.6, max_steps=4000)


if __name__ == "__main__":
    sys.exit(pretrain_hint.main(sys.argv[1:], sys.modules[__name__]))
