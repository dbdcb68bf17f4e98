"""GRPO and its variants on the built-in synthetic task (tiny model, CPU).

    upt train --config experiments/grpo.py                 # GRPO
    upt train --config experiments/grpo.py:dapo            # dr_grpo | dapo | gspo | cispo | rloo | reinforce_pp
    upt train --config experiments/grpo.py --config.train.steps=5 --config.run_dir=/tmp/grpo

A real model and dataset (e.g. Qwen2.5-Math-1.5B on a mesh) by changing the config:

    upt train --config experiments/grpo.py --config.model.init=hf \\
        --config.model.hf_dir=/ckpt/Qwen2.5-Math-1.5B --config.tokenizer=/ckpt/Qwen2.5-Math-1.5B \\
        --config.model.param_dtype=bfloat16 --config.data.source=file \\
        --config.data.path=/data/openr1.jsonl --config.data.verifier=math \\
        --config.data.template=chat --config.mesh.fsdp=8 --config.rollout.max_new_tokens=2048
"""

from upt_jax.train.config import base_config

VARIANTS = ("grpo", "dr_grpo", "dapo", "gspo", "cispo", "rloo", "reinforce_pp")


def get_config(arg: str | None = None):
    name = arg or "grpo"
    if name not in VARIANTS:
        raise ValueError(f"experiments/grpo.py: unknown variant {name!r}; expected one of {VARIANTS}")
    c = base_config()
    c.name = name
    c.run_dir = f"runs/{name}"
    c.recipe.name = name
    c.mode = "online"
    if name == "dapo":
        c.train.dynamic_sampling = True
    return c
