"""A Bradley–Terry reward model on preference pairs (synthetic: the demonstration vs the same
demonstration ending in a wrong answer), initialised from the policy's decoder.

    upt train --config experiments/reward_model.py
    upt train --config experiments/reward_model.py --config.reward_model.margin=0.5 \\
        --config.reward_model.label_smoothing=0.1

Logged: the Bradley–Terry loss, pair accuracy on the batch and on held-out pairs.
"""

import ml_collections

from upt_jax.train.config import base_config


def get_config(arg: str | None = None):
    c = base_config()
    c.name = "reward_model"
    c.run_dir = "runs/reward_model"
    c.mode = "reward_model"
    c.recipe.name = "sft"  # unused by reward-model training
    c.train.questions_per_step = 8  # pairs per step
    c.train.learning_rate = 3e-4
    c.reward_model = ml_collections.ConfigDict(dict(margin=0.0, label_smoothing=0.0, eval_every=10, eval_pairs=64))
    return c
