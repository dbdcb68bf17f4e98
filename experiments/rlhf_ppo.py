"""RLHF: PPO with a learned reward model (train one with experiments/reward_model.py first),
KL to the frozen reference folded into the reward (InstructGPT), reward whitening per batch.

    upt train --config experiments/reward_model.py --config.run_dir=runs/reward_model
    upt train --config experiments/rlhf_ppo.py --config.reward.model_run_dir=runs/reward_model
"""

import ml_collections

from upt_jax.config_files import sibling

ppo = sibling(__file__, "ppo")  # loaded by path: experiments/ is not a package


def get_config(arg: str | None = None):
    c = ppo.get_config()
    c.name = "rlhf_ppo"
    c.run_dir = "runs/rlhf_ppo"
    c.recipe.hparams = ml_collections.ConfigDict(dict(gamma=1.0, lam=0.95, kl_coef=0.05, kl_kind="k1"), type_safe=False)
    c.reward.source = "model"
    c.reward.model_run_dir = "runs/reward_model"
    c.reward.normalize = "batch"
    return c
