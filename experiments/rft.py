"""Online rejection-sampling fine-tuning (RFT): SFT on the policy's own verified-correct rollouts
(recipe ``rft``: Â = 1, ∇log π, token-mean over the rollouts with reward > 0.5).

    upt train --config experiments/rft.py
"""

from upt_jax.train.config import base_config


def get_config(arg: str | None = None):
    c = base_config()
    c.name = "rft"
    c.run_dir = "runs/rft"
    c.recipe.name = "rft"
    c.mode = "online"
    c.rollout.n = 8
    return c
