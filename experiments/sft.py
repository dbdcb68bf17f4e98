"""SFT on the synthetic task's programmatic demonstrations (tiny model, CPU).

upt train --config experiments/sft.py --config.train.steps=50
"""

from upt_jax.train.config import base_config


def get_config(arg: str | None = None):
    c = base_config()
    c.name = "sft"
    c.run_dir = "runs/sft"
    c.recipe.name = "sft"
    c.mode = "offline"
    c.train.questions_per_step = 16
    c.train.learning_rate = 1e-3
    return c
