"""Objective values: what each term's method minimises (logged; never differentiated).

The surrogate's value is not the method's objective (it is ``−1`` for SFT, ``≈ 0`` for GRPO);
`objective_terms` gives, per token, the value whose aggregation is the method's own loss.
"""

from __future__ import annotations

import jax.numpy as jnp

from upt_jax.upge._common import sg


def _ppo_value(v, a, eps_low=0.2, eps_high=None):
    """The PPO objective's likelihood factor ``min(v Â, clip(v, 1−ε_low, 1+ε_high) Â) / Â``."""
    eps_high = eps_low if eps_high is None else eps_high
    cv = jnp.clip(v, 1.0 - eps_low, 1.0 + eps_high)
    return jnp.where(a >= 0, jnp.minimum(v, cv), jnp.maximum(v, cv))


def _value_dual(v, w, c, eps_low=0.2, eps_high=None, c_dual=3.0):
    base = _ppo_value(v, c.adv, eps_low, eps_high)
    return jnp.where(c.adv < 0, jnp.minimum(base, c_dual), base)  # max(min(vÂ, clip(v)Â), cÂ) / Â


def _value_weight(v, w, c, **_):
    return v * w


# stabiliser name -> (v, its weight, ctx, **kw) -> the objective's factor after the stabiliser,
# starting from v = π_θ / π_ref (the importance ratio; π_θ for `unit`; s_i for `gspo`).
STABILISER_VALUES = {
    "none": lambda v, w, c: v,
    "ppo_clip": lambda v, w, c, eps_low=0.2, eps_high=None: _ppo_value(v, c.adv, eps_low, eps_high),
    "gspo_clip": lambda v, w, c, eps_low=3e-4, eps_high=4e-4: _ppo_value(v, c.adv, eps_low, eps_high),
    "dual_clip": _value_dual,
    "policy_shaping": lambda v, w, c, gamma=0.1: v / (v + gamma),  # LUFFY's f(π) = π/(π+γ)
    "cispo": _value_weight,
    "tis": _value_weight,
    "icepop": _value_weight,
    "entropy_weight": _value_weight,
}


# advantage name -> (ctx, adv, stable) -> [B, T] objective values, for terms whose objective is not
# one of the forms below (KL-Cov's penalty: `_wiring`)
OBJECTIVE_VALUES = {}


def objective_terms(parts, c, ref, adv, stable, weights):
    """Per-token values ``o_{i,t}`` of the term's objective (``[B, T]``, no gradient).

    Aggregated with the surrogate's weights, ``Σ w o / D`` is the method's own loss:

    * ``teacher_probs`` (forward KL): ``o = Σ_v p_T(v) (log p_T(v) − log q_θ(v))``;
    * ``teacher_log_ratio`` (on-policy distillation): ``o = log π_θ − log π_T = −Â``;
    * reference ``current`` (score-function objectives): ``o = −1_stable Â log π_θ``
      (SFT/RFT: the NLL; REINFORCE, ReMax, CISPO: ``−w Â log π``);
    * other references: ``o = −Â f(ρ)`` with ``ρ = π_θ/π_ref`` and ``f`` the stabilisers'
      values in turn (`STABILISER_VALUES`): the clipped PPO objective ``min(ρÂ, clip(ρ)Â)``,
      dual clip, LUFFY's shaped ``π/(π+γ)``, weights (TIS, IcePop, SRFT) multiplying.

    Pairwise losses (DPO, IPO, SimPO, ORPO) have row values instead (``c.row_objective``); their
    token values are 0.
    """
    name = parts.advantage.name
    if c.row_objective is not None:
        return jnp.zeros_like(c.mask)
    if name in OBJECTIVE_VALUES:
        return OBJECTIVE_VALUES[name](c, adv, stable)
    if name == "teacher_probs":
        p = adv
        return jnp.sum(jnp.where(p > 0, p * (jnp.log(jnp.where(p > 0, p, 1.0)) - c.logp), 0.0), axis=-1)
    if name == "teacher_log_ratio":
        return -stable * adv
    if parts.reference.name == "current":
        return -stable * adv * jnp.where(c.mask > 0, c.logp, 0.0)
    v = jnp.exp(jnp.where(c.mask > 0, c.logp - sg(ref), 0.0))
    for sp, w in zip(parts.stabiliser, weights):
        v = STABILISER_VALUES[sp.name](v, w, c, **sp.kw)
    return -adv * v
