"""What of a teacher a recipe reads (`TeacherInputs`, `teacher_inputs`), the recipe as the jitted
step computes it (`without_top_k`: the student gathers the teacher's top-k ids itself) and the
forward-KL value it reports (`forward_kl_value`)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

__all__ = ["TeacherInputs", "teacher_inputs", "teacher_probs_part", "without_top_k", "forward_kl_value"]


@dataclasses.dataclass(frozen=True)
class TeacherInputs:
    """What of a teacher model a recipe reads: ``teacher_logits`` (vocabulary-level forward KL;
    ``top_k``: only the teacher's ``k`` most likely entries, sent with ``teacher_ids``) and/or
    ``teacher_logp`` (on-policy distillation: the teacher's log-prob of each token)."""

    logits: bool = False
    logp: bool = False
    top_k: int | None = None

    @property
    def any(self) -> bool:
        return self.logits or self.logp


def teacher_inputs(recipe) -> TeacherInputs:
    """The teacher inputs ``recipe`` needs (``upge.requirements``: none without a distillation term)."""
    from upt_jax import upge

    req = upge.requirements(recipe)
    probs = teacher_probs_part(recipe)
    return TeacherInputs(
        logits=req.teacher_logits, logp=req.teacher_logp, top_k=None if probs is None else probs.kw.get("top_k")
    )


def teacher_probs_part(recipe):
    """The recipe's vocabulary-level part (e.g. ``teacher_probs``: ``upge.requirements``), or None."""
    from upt_jax import upge

    return upge.requirements(recipe).vocab_part


def without_top_k(recipe):
    """``recipe`` with ``top_k`` dropped from its vocabulary-level parts."""
    from upt_jax import upge

    vocab = teacher_probs_part(recipe)

    def fix(parts):
        if parts is None or vocab is None or parts.advantage.name != vocab.name:
            return parts
        kw = {k: v for k, v in parts.advantage.kw.items() if k != "top_k"}
        return dataclasses.replace(parts, advantage=upge.part(vocab.name, **kw))

    terms = tuple(dataclasses.replace(t, rollout=fix(t.rollout), demo=fix(t.demo)) for t in recipe.terms)
    return dataclasses.replace(recipe, terms=terms)


def forward_kl_value(
    logq: jax.Array, teacher_logits: jax.Array, mask: jax.Array, *, temperature: float = 1.0, top_k: int | None = None
) -> jax.Array:
    """``mean_t Σ_v p_T(v) (log p_T(v) − log q(v))`` over ``mask`` (no gradient).

    ``logq`` and ``teacher_logits`` are ``[B, T, V]`` (or both ``[B, T, k]``, gathered at the same
    ids); ``p_T = softmax(teacher_logits / τ)``, renormalised over the top-``k`` when asked.
    """
    from upt_jax import upge

    p, idx = upge.forward_kl_advantages(teacher_logits, temperature=temperature, top_k=top_k)
    logq = jax.lax.stop_gradient(logq)
    if idx is not None:
        logq = jnp.take_along_axis(logq, idx, axis=-1)
    kl = jnp.sum(p * (jnp.log(jnp.maximum(p, 1e-30)) - logq), axis=-1)
    return upge.masked_mean(kl, mask)
