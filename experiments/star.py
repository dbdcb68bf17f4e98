"""STaR: rounds of (sample → keep verified-correct rationales → rationalise the failures with the
answer as a hint → SFT the base model on what was kept).

    upt train --config experiments/star.py
    upt train --config experiments/star.py --config.star.rounds=3 --config.star.questions=256
"""

import ml_collections

from upt_jax.train.config import base_config


def get_config(arg: str | None = None):
    c = base_config()
    c.name = "star"
    c.run_dir = "runs/star"
    c.mode = "star"
    c.recipe.name = "sft"
    c.rollout.n = 4
    c.train.steps = 20  # SFT steps per round
    c.train.learning_rate = 1e-3
    c.star = ml_collections.ConfigDict(dict(rounds=2, questions=128, rationalise=True))
    return c
