"""A process reward model on the synthetic task's per-step labels: each demonstration is shown
clean or with one step's result corrupted (steps from the first error on are labelled wrong);
binary cross-entropy at every step's last token. Logs per-step accuracy on held-out data.

    upt train --config experiments/prm.py
"""

import ml_collections

from upt_jax.train.config import base_config


def get_config(arg: str | None = None):
    c = base_config()
    c.name = "prm"
    c.run_dir = "runs/prm"
    c.mode = "prm"
    c.recipe.name = "sft"  # unused by reward-model training
    c.train.questions_per_step = 16
    c.train.learning_rate = 1e-3
    c.reward_model = ml_collections.ConfigDict(dict(margin=0.0, label_smoothing=0.0, eval_every=10, eval_pairs=64))
    return c
