"""Distillation from a frozen teacher: forward KL on demonstrations (``fkl``, offline) and reverse
KL on the student's own samples (``on_policy``, online), on the built-in synthetic task.

    upt train --config experiments/sft.py --config.run_dir=runs/sft        # the teacher (once)
    upt train --config experiments/distill.py                               # forward KL → runs/distill_fkl
    upt train --config experiments/distill.py:on_policy                     # reverse KL → runs/distill_on_policy

- ``fkl`` (recipe ``distill_fkl``): per step, the teacher's next-token logits on the step's
  demonstration rows; loss ``KL(p_T ‖ q_θ)`` over the vocabulary, token-mean (UPGE with
  ``Â_v = p_T(v)``, ``π_ref = q_θ``). ``--config.recipe.hparams.top_k=K`` keeps only the teacher's
  ``K`` most likely entries (renormalised): the step then holds ``[B, T, K]`` teacher logits and ids
  instead of ``[B, T, V]`` — use it for real vocabularies (Qwen: V ≈ 152k). ``temperature`` too.
- ``on_policy`` (recipe ``distill_on_policy``): the student samples ``rollout.n`` responses per
  question; per step the teacher scores each sampled token (``teacher_logp``, like ``ref_logp``);
  ``Â_t = −(log π_θ − log π_T)(o_t)``, ∇log π. Rewards are not used by the loss; the verifier still
  scores the rollouts for the logs (``reward/mean``, ``pass_rate/mean``).
- Logged: ``distill/forward_kl`` (fkl) or ``distill/reverse_kl`` (on_policy: the sampled-token
  estimate ``mean_t (log π_θ − log π_T)``).

The teacher (``config.teacher``) is a previous upt_jax run directory (``teacher.run_dir``, its shape
read from its config.json) or a Hugging Face checkpoint (``teacher.hf_dir``): any size, the
student's tokenizer (checked). The student starts from the tiny base model of
``experiments/pretrain_tiny.py`` when ``runs/pretrain_tiny`` exists, else from a random tiny model.

A real teacher and student (Qwen2.5-Math-7B → Qwen2.5-Math-1.5B; one tokenizer, vocabularies padded
to 152064 / 151936 entries, which is allowed) by changing the config:

    upt train --config experiments/distill.py --config.model.init=hf \\
        --config.model.hf_dir=/ckpt/Qwen2.5-Math-1.5B --config.tokenizer=/ckpt/Qwen2.5-Math-1.5B \\
        --config.model.param_dtype=bfloat16 --config.teacher.hf_dir=/ckpt/Qwen2.5-Math-7B \\
        --config.teacher.param_dtype=bfloat16 --config.teacher.dtype=bfloat16 \\
        --config.recipe.hparams.top_k=64 --config.data.source=file \\
        --config.data.path=/data/openr1.jsonl --config.data.template=chat \\
        --config.data.verifier=math --config.train.microbatches=8 --config.mesh.fsdp=8
    # on-policy: experiments/distill.py:on_policy with the same overrides (no top_k) and
    #   --config.rollout.max_new_tokens=2048
"""

import os

from upt_jax.config_files import sibling
from upt_jax.train.config import base_config

pretrain_tiny = sibling(__file__, "pretrain_tiny")  # loaded by path: experiments/ is not a package

VARIANTS = ("fkl", "on_policy")
TEACHER_RUN_DIR = "runs/sft"  # `upt train --config experiments/sft.py --config.run_dir=runs/sft`


def get_config(arg: str | None = None):
    variant = arg or "fkl"
    if variant not in VARIANTS:
        raise ValueError(f"experiments/distill.py: unknown variant {variant!r}; expected one of {VARIANTS}")
    c = base_config()
    c.name = f"distill_{variant}"
    c.run_dir = f"runs/distill_{variant}"
    c.teacher.run_dir = TEACHER_RUN_DIR
    if os.path.isdir(pretrain_tiny.RUN_DIR):
        pretrain_tiny.from_base(c)
    c.train.learning_rate = 1e-3
    if variant == "fkl":
        c.recipe.name = "distill_fkl"
        c.mode = "offline"  # the synthetic task's demonstrations (or data.source=corpus text)
        c.train.questions_per_step = 16
    else:
        c.recipe.name = "distill_on_policy"
        c.mode = "online"
        c.rollout.n = 4
        c.rollout.max_new_tokens = 384  # demonstrations reach 332 characters
    return c
