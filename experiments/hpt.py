"""Hybrid Post-Training (HPT): per question, RL on its rollouts if the pass rate P > γ, else
SFT on its demonstration.

    upt train --config experiments/hpt.py                   # the paper's text (Eq. 11)
    upt train --config experiments/hpt.py:released_code     # as the released code ran
    upt train --config experiments/hpt.py --config.recipe.hparams.gamma=0.25
"""

import ml_collections

from upt_jax.train.config import base_config


def get_config(arg: str | None = None):
    variant = arg or "paper_text"
    c = base_config()
    c.name = f"hpt_{variant}"
    c.run_dir = f"runs/hpt_{variant}"
    c.recipe.name = "hpt"
    c.recipe.hparams = ml_collections.ConfigDict(dict(variant=variant, gamma=0.0), type_safe=False)
    c.mode = "online"
    return c
