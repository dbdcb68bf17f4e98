"""The part tables of the loss builder: part name -> function of the context (`PartContext`, what a
part may read: batch arrays, sg(logp), the advantages) and the part's keyword arguments, for the
stabilisers, references, advantages and gates (`register_*` adds to them; see `upt_jax.upge._loss`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from upt_jax.upge import _advantages as adv_lib
from upt_jax.upge import _aggregation
from upt_jax.upge import _distill
from upt_jax.upge import _gates
from upt_jax.upge import _needs
from upt_jax.upge import _preference
from upt_jax.upge import _references as ref_lib
from upt_jax.upge import _regularisers as reg
from upt_jax.upge import _stabilisers as stab_lib
from upt_jax.upge._common import broadcast_to_tokens, group_view, masked_mean, safe_div, sg
from upt_jax.upge._objective import (
    OBJECTIVE_VALUES,
    STABILISER_VALUES,  # noqa: F401
    _value_weight,
    objective_terms,
)
from upt_jax.upge._parts import Part, Recipe, Term
from upt_jax.upge._surrogate import token_metrics, upge_token_terms


class PartContext:
    """What part functions may read: batch arrays, sg(logp), the advantages."""

    def __init__(self, batch, logp=None, group_size=1, entropy=None):
        self.batch = batch
        self.mask = jnp.asarray(batch["mask"], jnp.float32)
        self.logp = None if logp is None else sg(logp)
        self.group_size = group_size
        self.adv = None
        self.rows = None
        self.rewards = None
        self.token_rewards = None
        self.ref = None
        self.entropy = None if entropy is None else sg(entropy)
        self.row_objective = None  # [B] per-row objective of pairwise losses (set by their advantage)
        self.pair_margin = None

    def get(self, key):
        if key not in self.batch:
            raise KeyError(f"this recipe needs batch[{key!r}]")
        return self.batch[key]

    @property
    def log_ratio(self):
        return self.logp - sg(self.get("old_logp"))


# ----------------------------------------------------------------------------
# Registries: part name -> function of the context and the part's kwargs.
# ----------------------------------------------------------------------------


def _st_none(c):
    return jnp.ones_like(c.mask), jnp.zeros_like(c.mask)


def _st_ppo(c, eps_low=0.2, eps_high=None):
    # clips the row's likelihood factor ρ = π_θ/π_ref: the importance ratio for
    # `behaviour`, π_θ itself for `unit` (SRFT's off-policy demo term).
    w = stab_lib.ppo_clip(c.logp - c.ref, c.adv, eps_low, eps_high)
    return w, 1.0 - w


def _st_dual(c, eps_low=0.2, eps_high=None, c_dual=3.0):
    w = stab_lib.dual_clip(c.logp - c.ref, c.adv, eps_low, eps_high, c_dual)
    return w, 1.0 - w


def _st_cispo(c, eps_low=1e9, eps_high=0.28):
    w = stab_lib.cispo_weight(c.log_ratio, eps_low, eps_high)
    r = jnp.exp(c.log_ratio)
    return w, ((r > 1 + eps_high) | (r < 1 - eps_low)).astype(jnp.float32)


def _st_gspo(c, eps_low=3e-4, eps_high=4e-4):
    slr = ref_lib.sequence_log_ratio(c.logp, sg(c.get("old_logp")), c.mask)
    w = jnp.broadcast_to(stab_lib.gspo_clip(slr, c.adv, eps_low, eps_high), c.mask.shape)
    return w, 1.0 - w


def _st_tis(c, cap=2.0):
    w = stab_lib.truncated_is(c.get("old_logp"), c.get("rollout_logp"), cap)
    return w, (w >= cap).astype(jnp.float32)


def _st_icepop(c, low=0.5, high=5.0):
    w = stab_lib.icepop(c.get("old_logp"), c.get("rollout_logp"), low, high)
    return w, 1.0 - w


def _st_shaping(c, gamma=0.1):
    return stab_lib.policy_shaping(c.logp, gamma), jnp.zeros_like(c.mask)


def _st_entropy_weight(c, coef=1.0, form="exp_neg", positive_only=False, threshold=0.5):
    """SRFT row weight ``coef · f(sg(mean_t H))``; with ``positive_only`` only rows with reward > threshold."""
    ent = c.entropy if ("entropy" not in c.batch and c.entropy is not None) else c.get("entropy")
    h = masked_mean(sg(ent), c.mask, axis=-1)
    f = {"exp_neg": jnp.exp(-h), "exp": jnp.exp(h), "identity": h}[form]
    w = coef * f
    if positive_only:
        w = jnp.where(jnp.asarray(c.get("rewards")) > threshold, w, 1.0)
    return jnp.broadcast_to(w[:, None], c.mask.shape), jnp.zeros_like(c.mask)


STABILISERS = {
    "none": _st_none,
    "ppo_clip": _st_ppo,
    "dual_clip": _st_dual,
    "cispo": _st_cispo,
    "gspo_clip": _st_gspo,
    "tis": _st_tis,
    "icepop": _st_icepop,
    "policy_shaping": _st_shaping,
    "entropy_weight": _st_entropy_weight,
}

REFERENCES = {
    "current": lambda c: ref_lib.current_policy_reference(c.logp),
    "behaviour": lambda c: ref_lib.behaviour_reference(c.get("old_logp")),
    "unit": lambda c: ref_lib.unit_reference(c.logp),
    "gspo": lambda c: ref_lib.gspo_reference(c.logp, sg(c.get("old_logp")), c.mask),
}


def _pairs(c, key):
    x = c.get(key) if key != "logp" else c.logp
    g = group_view(x, 2)
    return g[:, 0], g[:, 1]


def _pref(fn, with_ref, **kw):
    def run(c):
        if c.group_size != 2:
            raise ValueError("preference recipes need group_size=2 (chosen row, then rejected row)")
        lw, ll = _pairs(c, "logp")
        mw, ml = _pairs(c, "mask")
        args = (lw, ll, mw, ml) + (_pairs(c, "ref_logp") if with_ref else ())
        aw, al, h, loss = fn(*args, **kw)
        c.row_objective, c.pair_margin = jnp.repeat(loss, 2), jnp.repeat(h, 2)  # both rows of a pair
        return jnp.stack([aw, al], axis=1).reshape(-1)

    return run


# name -> (function(ctx, **kw), needs the current policy)
ADVANTAGES = {
    "one": (lambda c, value=1.0: adv_lib.constant_advantages(c.mask[:, 0], value), False),
    "reinforce": (lambda c: adv_lib.reinforce_advantages(c.rewards), False),
    "sign": (lambda c, threshold=0.5: adv_lib.sign_advantages(c.rewards, threshold), False),
    "grpo": (
        lambda c, eps=1e-6, ddof=0: adv_lib.grpo_advantages(
            c.rewards, c.group_size, eps=eps, row_mask=c.rows, ddof=ddof
        ),
        False,
    ),
    "dr_grpo": (lambda c: adv_lib.dr_grpo_advantages(c.rewards, c.group_size, row_mask=c.rows), False),
    "rloo": (lambda c: adv_lib.rloo_advantages(c.rewards, c.group_size, row_mask=c.rows), False),
    "remax": (lambda c: adv_lib.remax_advantages(c.rewards, c.get("baseline_rewards")), False),
    "reinforce_pp": (
        lambda c, eps=1e-8: adv_lib.reinforce_pp_advantages(c.token_rewards, c.mask, eps=eps, row_mask=c.rows),
        False,
    ),
    "reinforce_pp_baseline": (
        lambda c, eps=1e-8: adv_lib.reinforce_pp_baseline_advantages(
            c.rewards, c.mask, c.group_size, eps=eps, row_mask=c.rows
        ),
        False,
    ),
    "process": (
        lambda c, eps=1e-6: adv_lib.process_advantages(
            c.get("step_rewards"), c.get("step_mask"), c.mask, c.group_size, eps
        ),
        False,
    ),
    "gae": (
        lambda c, gamma=1.0, lam=0.95: adv_lib.gae_advantages(c.token_rewards, c.get("values"), c.mask, gamma, lam)[0],
        False,
    ),
    "teacher_probs": (
        lambda c, temperature=1.0, top_k=None: _dense_teacher_probs(c.get("teacher_logits"), temperature, top_k),
        False,
    ),
    "teacher_log_ratio": (lambda c: adv_lib.teacher_log_ratio_advantages(c.logp, c.get("teacher_logp"), c.mask), True),
    "dpo": (lambda c, **kw: _pref(_preference.dpo_advantages, True, **kw)(c), True),
    "ipo": (lambda c, **kw: _pref(_preference.ipo_advantages, True, **kw)(c), True),
    "simpo": (lambda c, **kw: _pref(_preference.simpo_advantages, False, **kw)(c), True),
    "orpo": (lambda c, **kw: _pref(_preference.orpo_advantages, False, **kw)(c), True),
}


def _dense_teacher_probs(teacher_logits, temperature, top_k):
    p, idx = _distill.forward_kl_advantages(teacher_logits, temperature=temperature, top_k=top_k)
    if idx is None:
        return p
    onehot = jax.nn.one_hot(idx, teacher_logits.shape[-1], dtype=p.dtype)
    return jnp.einsum("...k,...kv->...v", p, onehot)


def _gate_hpt(c, gate="hard", branch="rl", threshold=0.5, **kw):
    rollouts = 1.0 - jnp.asarray(c.batch.get("is_demo", jnp.zeros(c.mask.shape[0], bool)), jnp.float32)
    p = _gates.pass_rate(c.get("rewards"), c.group_size, rollouts, threshold)
    alpha, beta = _gates.GATES[gate](p, **kw)
    return alpha if branch == "rl" else beta


def _gate_nonzero_variance(c):
    rollouts = 1.0 - jnp.asarray(c.batch.get("is_demo", jnp.zeros(c.mask.shape[0], bool)), jnp.float32)
    _, sd, _ = adv_lib.group_statistics(c.get("rewards"), c.group_size, rollouts)
    return (sd > 0).astype(jnp.float32)


def _gate_correct(c, threshold=0.5):
    """RFT: keep a rollout only if the verifier accepted it (``r > threshold``)."""
    return (jnp.asarray(c.get("rewards"), jnp.float32) > threshold).astype(jnp.float32)


GATE_PARTS = {"hpt": _gate_hpt, "nonzero_variance": _gate_nonzero_variance, "correct": _gate_correct}
