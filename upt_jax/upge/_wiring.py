"""The parts of the 2025–26 losses, registered in the loss builder's registries (`_loss`).

Importing this module (``upt_jax.upge`` does) adds:

* stabilisers: ``sapo`` (SAPO's soft gate), ``gmpo_clip`` (GMPO's token clip in log space),
  ``dppo`` (DPPO's binary TV / KL trust region), ``log_ratio_sign`` (``sign(log π_θ − log π_old)``,
  the gradient of KL-Cov's ``|log π_θ − log π_old|``);
* references: ``gmpo`` (GMPO's clipped geometric-mean sequence ratio);
* advantages: ``gpg`` (GPG), ``clip_cov`` (group-normalised, 0 on Clip-Cov's selected
  tokens), ``kl_cov`` (``−β`` on KL-Cov's selected tokens), ``kto`` (KTO's implicit advantage);
* gates: ``pair_chosen`` (the chosen row of each preference pair: ORPO's NLL term).

Each wrapper reads the context ``c`` of `_loss` (``c.logp`` = ``sg(log π_θ)``, ``c.adv``,
``c.rewards``, ``c.rows``, ``c.group_size``, ``c.get(key)`` for batch arrays).
"""

from __future__ import annotations

import jax.numpy as jnp

from upt_jax.upge import _advantages as adv_lib
from upt_jax.upge import _cov
from upt_jax.upge import _kto
from upt_jax.upge import _loss
from upt_jax.upge import _trust
from upt_jax.upge._common import broadcast_to_tokens, sg


def _old(c):
  return sg(c.get('old_logp'))


# ----------------------------------------------------------------------------- stabilisers

def _st_sapo(c, tau_pos=1.0, tau_neg=1.05):
  return _trust.sapo_weight(c.log_ratio, c.adv, tau_pos, tau_neg), jnp.zeros_like(c.mask)


def _st_gmpo_clip(c, eps_low=0.4, eps_high=0.4):
  w = _trust.gmpo_clip(c.log_ratio, c.adv, eps_low, eps_high)
  return w, 1.0 - w


def _st_dppo(c, divergence='tv', delta_low=0.15, delta_high=0.15):
  w = _trust.dppo_mask(c.logp, _old(c), c.adv, divergence, delta_low, delta_high)
  return w, 1.0 - w


def _st_log_ratio_sign(c):
  return jnp.sign(c.log_ratio), jnp.zeros_like(c.mask)


# ----------------------------------------------------------------------------- advantages

def _grpo(c, eps, ddof):
  return adv_lib.grpo_advantages(c.rewards, c.group_size, eps=eps, row_mask=c.rows, ddof=ddof)


def _selection_mask(c):
  return c.mask * c.rows[:, None]


def _adv_clip_cov(c, ratio=2e-4, cov_low=1.0, cov_high=5.0, seed=0, eps=1e-6, ddof=0):
  """Group-normalised advantages, 0 on the tokens Clip-Cov selects (their gradient is removed)."""
  m = _selection_mask(c)
  a = broadcast_to_tokens(_grpo(c, eps, ddof), c.mask)
  u = c.batch['clip_cov_uniforms'] if 'clip_cov_uniforms' in c.batch else _cov.selection_uniforms(
      c.get('old_logp'), m, seed)
  sel = _cov.clip_cov_selection(_cov.token_covariance(a, _old(c), m), m, u, ratio, cov_low, cov_high)
  return a * (1.0 - sel)


def _adv_kl_cov(c, ratio=2e-3, coef=1.0, eps=1e-6, ddof=0):
  """``−β`` on the tokens KL-Cov selects (largest covariance of the group-normalised advantage), else 0."""
  m = _selection_mask(c)
  a = broadcast_to_tokens(_grpo(c, eps, ddof), c.mask)
  return -coef * _cov.kl_cov_selection(_cov.token_covariance(a, _old(c), m), m, ratio)


def _adv_kto(c, beta=0.1, desirable_weight=1.0, undesirable_weight=1.0):
  labels = jnp.asarray(c.get('kto_label'), jnp.float32)
  adv, r, loss = _kto.kto_advantages(c.logp, c.get('ref_logp'), c.mask, labels, c.get('kto_z0'), beta=beta,
                                     desirable_weight=desirable_weight, undesirable_weight=undesirable_weight)
  z0 = jnp.asarray(c.get('kto_z0'), jnp.float32)
  c.row_objective = loss
  c.pair_margin = jnp.where(labels > 0.5, r - z0, z0 - r)  # > 0: the row is on its label's side of z₀
  return adv


def _objective_kl_cov(c, adv, stable):
  """KL-Cov's penalty ``β |log π_θ − log π_old|`` on its selected tokens (``adv = −β`` there)."""
  return jnp.where(c.mask > 0, -adv * jnp.abs(c.log_ratio), 0.0)


# ----------------------------------------------------------------------------- gates

def _gate_pair_chosen(c):
  """1 on the first row of each group (the chosen response of a preference pair), else 0."""
  return (jnp.arange(c.mask.shape[0]) % c.group_size == 0).astype(jnp.float32)


_loss.STABILISERS.update(sapo=_st_sapo, gmpo_clip=_st_gmpo_clip, dppo=_st_dppo, log_ratio_sign=_st_log_ratio_sign)
_loss.STABILISER_VALUES.update(
    sapo=lambda v, w, c, tau_pos=1.0, tau_neg=1.05: _trust.sapo_gate_value(v, c.adv, tau_pos, tau_neg),
    gmpo_clip=lambda v, w, c, **_: v,  # the clip is inside GMPO's sequence ratio already
    dppo=_loss._value_weight, log_ratio_sign=_loss._value_weight)  # pylint: disable=protected-access
_loss.REFERENCES['gmpo'] = lambda c, eps_low=0.4, eps_high=0.4: _trust.gmpo_reference(
    c.logp, _old(c), c.adv, c.mask, eps_low, eps_high)
_loss.ADVANTAGES.update(
    gpg=(lambda c: adv_lib.gpg_advantages(c.rewards, c.group_size, row_mask=c.rows), False),
    clip_cov=(_adv_clip_cov, False),
    kl_cov=(_adv_kl_cov, False),
    kto=(_adv_kto, True),
)
_loss.OBJECTIVE_VALUES['kl_cov'] = _objective_kl_cov
_loss.GATE_PARTS['pair_chosen'] = _gate_pair_chosen
