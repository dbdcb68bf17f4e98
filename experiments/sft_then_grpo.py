"""The two-stage pipeline SFT → GRPO: GRPO starts from SFT's final parameters.

    upt pipeline --config experiments/sft_then_grpo.py
    upt pipeline --config experiments/sft_then_grpo.py --config.sft.train.steps=5 --config.grpo.train.steps=5

A rerun after it finished only reports; after an interruption it resumes where it stopped.

From a Hugging Face model (GRPO takes the SFT run's model, tokenizer and template from its
model.json, as they are left at their defaults here):

    upt pipeline --config experiments/sft_then_grpo.py --config.sft.model.init=hf \
        --config.sft.model.hf_dir=DIR --config.sft.tokenizer=DIR --config.sft.data.template=chat
"""

import ml_collections

from upt_jax.config_files import sibling

grpo, sft = sibling(__file__, "grpo"), sibling(__file__, "sft")  # by path: experiments/ is not a package


def get_config(arg: str | None = None):
    c = ml_collections.ConfigDict()
    c.run_dir = "runs/sft_then_grpo"
    c.order = ("sft", "grpo")
    c.sft = sft.get_config()
    c.grpo = grpo.get_config(arg)
    return c
