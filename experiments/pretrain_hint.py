"""The base model of the index-hinted arithmetic family (`upt_jax.data.hinted`, tiers ``hadd_*``,
``hmul_*``, ``hsub_*``): plain language modelling on its corpus (hinted base-tier demonstrations
and one-column facts) at a constant learning rate, stopped once the base tiers are learned
(`upt_jax.studies.base_model.pretrain_until`: constant rate until the transition, then a
linear cool-down), not after a fixed number of steps.

    python -m experiments.pretrain_hint [RUN_DIR]          # → runs/pretrain_hint

Everything but the corpus, the schedule and the stopping rule is `experiments/pretrain_tiny.py`'s
(the same model shape, learning rate, batch and warmup).
"""
import sys

from experiments import pretrain_tiny
from upt_jax.data import hinted

RUN_DIR = "runs/pretrain_hint"
# the base tiers the stopping criterion watches; hmul_2x1 is in the corpus too but is meant to
# stay partly solved (an RL tier)
STOP_TIERS = ("hadd_2", "hadd_3")


def get_config(arg: str | None = None):
    c = pretrain_tiny.get_config()
    c.name, c.run_dir = "pretrain_hint", RUN_DIR
    c.data.tiers = c.data.corpus.tiers = hinted.CORPUS_TIERS
    c.data.corpus.n_docs = 100000
    c.train.steps = 3000  # an upper bound: pretrain_until stops on its criterion
    c.train.schedule = "constant"  # stopping on a criterion: nothing may depend on the step count
    c.checkpoint.every = 100
    c.log.progress = False
    return c


def criterion():
    from upt_jax.studies.base_model import StopCriterion

    return StopCriterion(tiers=STOP_TIERS, transition=0.3, target=0.85, cooldown_frac=0.5, patience=2,
                         eval_every=100, max_steps=3000, n_eval=64)


if __name__ == "__main__":
    import logging

    from upt_jax.studies.base_model import pretrain_until

    logging.basicConfig(level=logging.WARNING)
    config = get_config()
    if len(sys.argv) > 1:
        config.run_dir = sys.argv[1]
    if len(sys.argv) > 2:
        config.seed = int(sys.argv[2])
    result = pretrain_until(config, criterion(), progress=True)
    print(f"stopped at step {result.step}; converged: {result.converged}")
