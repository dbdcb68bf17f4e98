"""Gates: per-question weights that decide which signal a question contributes.

HPT (Lv et al. 2025) scores ``n`` rollouts per question with a verifier,
``P = fraction correct``, and uses ``L = α·L_RL + β·L_SFT`` with ``(α, β)`` a
function of ``P``. A gate returns ``(α, β)`` per row (``[B]``, every row of a
question holding its question's value); the RL term's rollout rows are weighted
by ``α`` and the SFT term's demonstration rows by ``β``. Rows with weight 0 are
also removed from their term's denominator.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from upt_jax.upge._common import group_view, safe_div, sg


def pass_rate(
    rewards: jax.Array, group_size: int, row_mask: jax.Array | None = None, threshold: float = 0.5
) -> jax.Array:
    """Per-question pass rate ``P = mean_{rollouts j} 1[r_j > threshold]``, per row.

    Args:
      rewards: ``[B]`` verifier rewards, groups contiguous.
      group_size: ``G`` rows per question.
      row_mask: ``[B]`` rows that are rollouts (demonstrations excluded); default all.
      threshold: a rollout is correct when its reward exceeds this.

    Returns:
      ``[B]`` pass rates (each row holds its question's ``P``).
    """
    r = sg(jnp.asarray(rewards, jnp.float32))
    m = jnp.ones_like(r) if row_mask is None else jnp.asarray(row_mask, jnp.float32)
    ok = group_view((r > threshold).astype(jnp.float32) * m, group_size)
    n = group_view(m, group_size)
    p = safe_div(jnp.sum(ok, 1, keepdims=True), jnp.sum(n, 1, keepdims=True))
    return jnp.broadcast_to(p, ok.shape).reshape(r.shape)


def hard_gate(p: jax.Array, gamma: float = 0.0):
    """HPT's hard gate: ``P > γ → (α, β) = (1, 0)`` (RL); ``P ≤ γ → (0, 1)`` (SFT).

    Args:
      p: ``[B]`` pass rates.
      gamma: threshold ``γ`` (HPT default 0: SFT only when no rollout is correct).

    Returns:
      ``(alpha [B], beta [B])`` in {0, 1}.
    """
    rl = (p > gamma).astype(jnp.float32)
    return rl, 1.0 - rl


def soft_gate(p: jax.Array, gamma: float = 0.0, temperature: float = 0.1):
    """A soft gate: ``α = σ((P − γ)/τ)``, ``β = 1 − α``.

    Args:
      p: ``[B]`` pass rates.
      gamma: centre ``γ``.
      temperature: ``τ > 0`` (→ 0 recovers `hard_gate`).

    Returns:
      ``(alpha [B], beta [B])`` in (0, 1).
    """
    a = jax.nn.sigmoid((p - gamma) / temperature)
    return a, 1.0 - a


def linear_gate(p: jax.Array):
    """The linear soft gate ``α = P``, ``β = 1 − P``.

    Args:
      p: ``[B]`` pass rates.

    Returns:
      ``(alpha [B], beta [B])``.
    """
    p = jnp.asarray(p, jnp.float32)
    return p, 1.0 - p


def mix_gate(p: jax.Array, alpha: float = 1.0, beta: float = 1.0):
    """Always mix: constant ``(α, β)`` whatever the pass rate.

    Math: ``α_i ≡ alpha``, ``β_i ≡ beta`` (e.g. ``L = L_RL + L_SFT`` on every question).

    Args:
      p: ``[B]`` pass rates (only the shape is used).
      alpha: RL weight.
      beta: SFT weight.

    Returns:
      ``(alpha [B], beta [B])``.
    """
    ones = jnp.ones(jnp.shape(p), jnp.float32)
    return alpha * ones, beta * ones


GATES = {"hard": hard_gate, "soft": soft_gate, "linear": linear_gate, "mix": mix_gate}
