"""Reference denominators ``π_ref``: what the likelihood gradient is divided by.

Each function returns ``log π_ref`` ``[B, T]`` with **no gradient**; the
surrogate uses ``exp(log π_θ − sg(log π_ref))``, whose gradient is
``(π_θ / π_ref) ∇ log π_θ = ∇π_θ / π_ref``.

| reference | ``π_ref`` | likelihood factor (value; gradient) |
|---|---|---|
| `current_policy_reference` | ``π_θ`` itself | ``1; ∇log π_θ`` (SFT, REINFORCE) |
| `behaviour_reference` | ``π_old`` / behaviour | ``r_t = π_θ/π_old; r_t ∇log π_θ`` (PPO, GRPO) |
| `unit_reference` | ``≡ 1`` | ``π_θ; ∇π_θ`` (off-policy demos: LUFFY, SRFT) |
| `gspo_reference` | ``π_θ(o_t) / s_i`` | ``s_i; s_i ∇log π_θ`` (GSPO, GSPO-token) |
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from upt_jax.upge._common import masked_mean, sg


def current_policy_reference(logp: jax.Array) -> jax.Array:
    """``log π_ref = sg(log π_θ)``: the surrogate factor is 1 with gradient ∇log π_θ.

    Args:
      logp: ``[B, T]`` current-policy token log-probs (``[B, T, V]`` also works).

    Returns:
      ``[B, T]`` stop-gradient copy of ``logp``.
    """
    return sg(logp)


def behaviour_reference(old_logp: jax.Array) -> jax.Array:
    """``log π_ref = log π_old``: the factor is the importance ratio ``r_t``.

    Math: ``exp(log π_θ − log π_old) = r_t``, gradient ``r_t ∇log π_θ``.

    Args:
      old_logp: ``[B, T]`` behaviour / old-policy token log-probs.

    Returns:
      ``[B, T]`` stop-gradient ``old_logp``.
    """
    return sg(old_logp)


def unit_reference(logp: jax.Array) -> jax.Array:
    """``π_ref ≡ 1`` (``log π_ref = 0``): the factor is ``π_θ`` and its gradient ``∇π_θ``.

    Used for off-policy demonstrations whose behaviour policy is unknown (LUFFY,
    SRFT): the likelihood gradient is not divided by anything.

    Args:
      logp: ``[B, T]`` log-probs (only its shape and dtype are used).

    Returns:
      ``[B, T]`` zeros.
    """
    return jnp.zeros_like(sg(logp))


def sequence_log_ratio(logp: jax.Array, old_logp: jax.Array, mask: jax.Array) -> jax.Array:
    """GSPO's length-normalised sequence log-ratio ``log s_i``.

    Math: ``log s_i = (1/|y_i|) Σ_t m_{i,t} (log π_θ − log π_old)_{i,t}``, i.e.
    ``s_i = (π_θ(y_i) / π_old(y_i))^{1/|y_i|}``. Differentiable in ``logp``.

    Args:
      logp: ``[B, T]`` current log-probs.
      old_logp: ``[B, T]`` behaviour log-probs.
      mask: ``[B, T]`` mask.

    Returns:
      ``[B]`` sequence log-ratios (0 for empty rows).
    """
    return masked_mean(logp - old_logp, mask, axis=-1)


def gspo_reference(logp: jax.Array, old_logp: jax.Array, mask: jax.Array) -> jax.Array:
    """GSPO's reference: ``log π_ref,t = sg(log π_θ,t − log s_i)``.

    Math: the surrogate factor becomes ``exp(log π_θ,t − sg(log π_θ,t) + sg(log s_i))
    = sg(s_i) · π_θ(o_t)/sg(π_θ(o_t))`` — GSPO-token's ``s_{i,t}`` — whose value is
    ``s_i`` and whose gradient is ``s_i ∇log π_θ(o_t)``. Averaged over the tokens of a
    sequence (aggregation ``seq-mean-token-mean``) this is exactly the gradient of
    GSPO's sequence objective ``s_i Â_i``, since ``∇s_i = s_i (1/|y_i|) Σ_t ∇log π_θ``.

    Args:
      logp: ``[B, T]`` current log-probs.
      old_logp: ``[B, T]`` behaviour log-probs.
      mask: ``[B, T]`` mask.

    Returns:
      ``[B, T]`` stop-gradient reference log-probs.
    """
    log_s = sequence_log_ratio(logp, old_logp, mask)
    return sg(logp - log_s[:, None])
