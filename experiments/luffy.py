"""LUFFY: each group holds n−1 on-policy rollouts and the question's demonstration; advantages
over the union; the demonstration uses π_ref ≡ 1 with policy shaping f(π) = π/(π+γ).

    upt train --config experiments/luffy.py
"""

from upt_jax.train.config import base_config


def get_config(arg: str | None = None):
    c = base_config()
    c.name = "luffy"
    c.run_dir = "runs/luffy"
    c.recipe.name = "luffy"
    c.rollout.n = 7  # + 1 demonstration = groups of 8
    return c
