"""PPO with a critic (value model initialised from the policy) and GAE, on the synthetic task.

upt train --config experiments/ppo.py
upt train --config experiments/ppo.py --config.recipe.hparams.kl_coef=0.05   # KL in the reward (RLHF)
"""

import ml_collections

from upt_jax.train.config import base_config


def get_config(arg: str | None = None):
    c = base_config()
    c.name = "ppo"
    c.run_dir = "runs/ppo"
    c.recipe.name = "ppo"
    c.recipe.hparams = ml_collections.ConfigDict(dict(gamma=1.0, lam=0.95), type_safe=False)
    c.rollout.n = 4  # PPO needs no groups; n samples per question just fill the batch
    c.train.update_epochs = 2
    return c
