"""The parts of the 2025–26 losses, registered in the loss builder's registries (`_loss`).

Importing this module (``upt_jax.upge`` does) adds:

* stabilisers: ``sapo`` (SAPO's soft gate), ``gmpo_clip`` (GMPO's token clip in log space),
  ``dppo`` (DPPO's binary TV / KL trust region), ``log_ratio_sign`` (``sign(log π_θ − log π_old)``,
  the gradient of KL-Cov's ``|log π_θ − log π_old|``);
* references: ``gmpo`` (GMPO's clipped geometric-mean sequence ratio);
* advantages: ``gpg`` (GPG), ``clip_cov`` (group-normalised, 0 on Clip-Cov's selected
  tokens), ``kl_cov`` (``−β`` on KL-Cov's selected tokens), ``opd`` (on-policy distillation's
  reverse-KL reward plus a group-normalised outcome advantage), ``kto`` (KTO's implicit advantage).

Each wrapper reads the context ``c`` of `_loss` (``c.logp`` = ``sg(log π_θ)``, ``c.adv``,
``c.rewards``, ``c.rows``, ``c.group_size``, ``c.get(key)`` for batch arrays).
"""

from __future__ import annotations

import jax.numpy as jnp

from upt_jax.upge import _advantages as adv_lib
from upt_jax.upge import _cov
from upt_jax.upge import _kto
from upt_jax.upge import _loss
from upt_jax.upge import _needs
from upt_jax.upge import _stabilisers as stab_lib
from upt_jax.upge import _trust
from upt_jax.upge._common import broadcast_to_tokens, sg


def _old(c):
    return sg(c.get("old_logp"))


# ----------------------------------------------------------------------------- stabilisers


def _st_sapo(c, tau_pos=1.0, tau_neg=1.05):
    return _trust.sapo_weight(c.log_ratio, c.adv, tau_pos, tau_neg), jnp.zeros_like(c.mask)


def _st_gmpo_clip(c, eps_low=0.4, eps_high=0.4):
    w = _trust.gmpo_clip(c.log_ratio, c.adv, eps_low, eps_high)
    return w, 1.0 - w


def _st_dppo(c, divergence="tv", delta_low=0.15, delta_high=0.15):
    w = _trust.dppo_mask(c.logp, _old(c), c.adv, divergence, delta_low, delta_high)
    return w, 1.0 - w


def _st_log_ratio_sign(c):
    return jnp.sign(c.log_ratio), jnp.zeros_like(c.mask)


# ----------------------------------------------------------------------------- advantages


def _grpo(c, eps, ddof):
    return adv_lib.grpo_advantages(c.rewards, c.group_size, eps=eps, row_mask=c.rows, ddof=ddof)


def _cov_inputs(c, eps, ddof):
    """``(mask, Â [B, T], log π [B, T])`` of the covariance: the term's rows, the group-normalised
    advantage and the policy's log-probs given to `prepare` (``old_logp`` when none: the policy's
    own at a step's first update)."""
    m = c.mask * c.rows[:, None]
    lp = _old(c) if c.logp is None else c.logp
    return m, broadcast_to_tokens(_grpo(c, eps, ddof), c.mask), lp


def _adv_clip_cov(c, ratio=2e-4, cov_low=1.0, cov_high=5.0, seed=0, eps=1e-6, ddof=0, clip_low=None, clip_high=None):
    """Group-normalised advantages, 0 on the tokens Clip-Cov selects (value and gradient removed).

    Tokens the PPO clip (``clip_low``, ``clip_high``) already holds are not candidates.
    """
    m, a, lp = _cov_inputs(c, eps, ddof)
    if clip_low is not None:
        m = m * stab_lib.ppo_clip(lp - _old(c), a, clip_low, clip_high)
    u = (
        c.batch["clip_cov_uniforms"]
        if "clip_cov_uniforms" in c.batch
        else _cov.selection_uniforms(c.get("old_logp"), m, seed)
    )
    sel = _cov.clip_cov_selection(
        _cov.token_covariance(a, lp, c.mask * c.rows[:, None]),
        m,
        u,
        ratio,
        cov_low,
        cov_high,
        budget_mask=c.mask * c.rows[:, None],
    )
    return a * (1.0 - sel)


def _adv_kl_cov(c, ratio=2e-4, coef=1.0, eps=1e-6, ddof=0):
    """``−β`` on the tokens KL-Cov selects (largest covariance of the group-normalised advantage), else 0."""
    m, a, lp = _cov_inputs(c, eps, ddof)
    return -coef * _cov.kl_cov_selection(_cov.token_covariance(a, lp, m), m, ratio)


def _adv_opd(c, alpha=1.0, eps=1e-6, ddof=0):
    """``Â_t = −(log π_old − log π_T) + α (r − μ_g)/(σ_g + ε)``: the sampled token's reverse-KL reward
    (behaviour log-probs) plus the group-normalised outcome advantage."""
    kl = jnp.where(c.mask > 0, -(_old(c) - sg(c.get("teacher_logp"))), 0.0)
    return kl + alpha * broadcast_to_tokens(_grpo(c, eps, ddof), c.mask)


def _adv_kto(c, beta=0.1, desirable_weight=1.0, undesirable_weight=1.0):
    labels = jnp.asarray(c.get("kto_label"), jnp.float32)
    adv, r, loss = _kto.kto_advantages(
        c.logp,
        c.get("ref_logp"),
        c.mask,
        labels,
        c.get("kto_z0"),
        beta=beta,
        desirable_weight=desirable_weight,
        undesirable_weight=undesirable_weight,
    )
    z0 = jnp.asarray(c.get("kto_z0"), jnp.float32)
    c.row_objective = loss
    c.pair_margin = jnp.where(labels > 0.5, r - z0, z0 - r)  # > 0: the row is on its label's side of z₀
    return adv


def _objective_kl_cov(c, adv, stable):
    """KL-Cov's penalty ``β |log π_θ − log π_old|`` on its selected tokens (``adv = −β`` there)."""
    return jnp.where(c.mask > 0, -adv * jnp.abs(c.log_ratio), 0.0)


_loss.STABILISERS.update(sapo=_st_sapo, gmpo_clip=_st_gmpo_clip, dppo=_st_dppo, log_ratio_sign=_st_log_ratio_sign)
_loss.STABILISER_VALUES.update(
    sapo=lambda v, w, c, tau_pos=1.0, tau_neg=1.05: _trust.sapo_gate_value(v, c.adv, tau_pos, tau_neg),
    gmpo_clip=lambda v, w, c, **_: v,  # the clip is inside GMPO's sequence ratio already
    dppo=_loss._value_weight,
    log_ratio_sign=_loss._value_weight,
)  # pylint: disable=protected-access
_loss.REFERENCES["gmpo"] = lambda c, eps_low=0.4, eps_high=0.4: _trust.gmpo_reference(
    c.logp, _old(c), c.adv, c.mask, eps_low, eps_high
)
_loss.ADVANTAGES.update(
    gpg=(
        lambda c, scale_by_std=False, eps=1e-6, ddof=0: adv_lib.gpg_advantages(
            c.rewards, c.group_size, row_mask=c.rows, scale_by_std=scale_by_std, eps=eps, ddof=ddof
        ),
        False,
    ),
    opd=(_adv_opd, False),
    clip_cov=(_adv_clip_cov, False),
    kl_cov=(_adv_kl_cov, False),
    kto=(_adv_kto, True),
)
_loss.OBJECTIVE_VALUES["kl_cov"] = _objective_kl_cov

# what each new part reads (`_needs`): a trainer provides a reference model for ``ref_logp``, a
# teacher for ``teacher_logp`` and groups of rows for group statistics from these, not from names
_needs.NEEDS["stabiliser"].update(
    sapo=_needs.Needs(), gmpo_clip=_needs.Needs(), dppo=_needs.Needs(("old_logp",)), log_ratio_sign=_needs.Needs()
)
_needs.NEEDS["reference"]["gmpo"] = _needs.Needs(("old_logp",))
_needs.NEEDS["advantage"].update(
    gpg=_needs.Needs(("rewards",), groups=2),
    opd=_needs.Needs(("rewards", "old_logp", "teacher_logp"), groups=2),
    # clip_cov_uniforms [B, T]: the random draw, given by the trainer from its step key
    clip_cov=_needs.Needs(("rewards", "old_logp", "clip_cov_uniforms"), groups=2),
    kl_cov=_needs.Needs(("rewards", "old_logp"), groups=2),
    kto=_needs.Needs(("ref_logp", "kto_label", "kto_z0")),
)
