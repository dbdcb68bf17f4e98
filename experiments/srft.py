"""SRFT: entropy-weighted demonstration SFT, off-policy RL on the demonstration, and ±1
REINFORCE on the policy's own rollouts, in one update.

    upt train --config experiments/srft.py
"""

from upt_jax.train.config import base_config


def get_config(arg: str | None = None):
    c = base_config()
    c.name = "srft"
    c.run_dir = "runs/srft"
    c.recipe.name = "srft"
    c.rollout.n = 7  # + 1 demonstration
    return c
