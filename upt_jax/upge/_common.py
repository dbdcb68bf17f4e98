"""Small masked-array helpers shared by the UPGE parts.

Conventions used throughout `upt_jax.upge`:

* ``B`` rows (sequences), ``T`` response positions, ``V`` vocabulary entries.
* ``mask`` ``[B, T]`` is 1 on response tokens and 0 on padding.
* Groups: ``B = num_groups * G``; the rows of one question are contiguous, so a
  ``[B]`` array reshapes to ``[num_groups, G]``.
* Everything here is a pure function of arrays; nothing carries gradient unless
  its docstring says so.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

sg = jax.lax.stop_gradient


def safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    """Elementwise ``num / den`` with ``0`` where ``den == 0``.

    Math: ``q = num / den`` if ``den != 0`` else ``0``; the gradient is finite
    everywhere (the ``den == 0`` branch never divides).

    Args:
      num: numerator, any shape, e.g. ``[B]`` or a scalar ``[]``.
      den: denominator, broadcastable to ``num``.

    Returns:
      Array of the broadcast shape of ``num`` and ``den``.
    """
    den = jnp.asarray(den)
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, 1), 0.0)


def masked_sum(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
    """Masked sum ``Σ m · x``.

    Args:
      x: values ``[B, T]`` (or any shape matching ``mask``).
      mask: ``[B, T]`` weights (usually 0/1).
      axis: axis or axes to reduce; ``None`` reduces everything (scalar ``[]``).

    Returns:
      ``Σ_{axis} m x``; shape ``[]`` for ``axis=None``, ``[B]`` for ``axis=-1``.
    """
    return jnp.sum(jnp.where(mask > 0, x * mask, 0.0), axis=axis)


def masked_mean(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
    """Masked mean ``Σ m · x / Σ m`` (0 where ``Σ m = 0``).

    Args:
      x: values ``[B, T]``.
      mask: ``[B, T]`` weights.
      axis: reduction axis; ``None`` for a scalar ``[]``, ``-1`` for per-row ``[B]``.

    Returns:
      The masked mean, shape ``[]`` or ``[B]``.
    """
    return safe_div(masked_sum(x, mask, axis), jnp.sum(mask, axis=axis))


def masked_std(x: jax.Array, mask: jax.Array, ddof: int = 0) -> jax.Array:
    """Masked standard deviation over all valid entries.

    Math: ``μ = Σ m x / Σ m``, ``σ² = Σ m (x − μ)² / (Σ m − ddof)``.

    Args:
      x: values ``[B, T]``.
      mask: ``[B, T]`` 0/1 mask.
      ddof: 0 for the population std (default), 1 for Bessel's correction.

    Returns:
      Scalar ``[]``.
    """
    mu = masked_mean(x, mask)
    n = jnp.sum(mask)
    var = safe_div(masked_sum(jnp.square(x - mu), mask), n - ddof)
    return jnp.sqrt(jnp.maximum(var, 0.0))


def masked_whiten(x: jax.Array, mask: jax.Array, eps: float = 1e-8, ddof: int = 0) -> jax.Array:
    """Whitens ``x`` with the mean and std of its valid entries.

    Math: ``x̃ = (x − μ) / (σ + eps)`` with ``μ, σ`` over ``{(i,t) : m_{i,t} = 1}``
    (population std unless ``ddof=1``); padded entries are returned as 0.

    Args:
      x: values ``[B, T]``.
      mask: ``[B, T]`` 0/1 mask.
      eps: added to the std.
      ddof: degrees of freedom of the std.

    Returns:
      ``[B, T]`` whitened values, 0 on padding.
    """
    mu = masked_mean(x, mask)
    sd = masked_std(x, mask, ddof=ddof)
    return jnp.where(mask > 0, (x - mu) / (sd + eps), 0.0)


def broadcast_to_tokens(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Broadcasts a per-sequence array ``[B]`` to tokens ``[B, T]`` (0 on padding).

    Arrays that already have a token axis (``[B, T]`` or ``[B, T, ...]``) are
    returned masked but otherwise unchanged.

    Args:
      x: ``[B]`` sequence values or ``[B, T, ...]`` token values.
      mask: ``[B, T]`` mask.

    Returns:
      ``[B, T]`` (or ``[B, T, ...]``) values, zero where ``mask == 0``.
    """
    x = jnp.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    m = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
    return jnp.where(m > 0, jnp.broadcast_to(x, jnp.broadcast_shapes(x.shape, m.shape)), 0.0)


def row_lengths(mask: jax.Array) -> jax.Array:
    """Number of valid tokens per row, ``|y_i| = Σ_t m_{i,t}``: ``[B, T] → [B]``."""
    return jnp.sum(mask, axis=-1)


def last_token_mask(mask: jax.Array) -> jax.Array:
    """One-hot ``[B, T]`` marking the last valid token of each row.

    Math: ``e_{i,t} = 1`` iff ``m_{i,t} = 1`` and ``m_{i,s} = 0`` for all ``s > t``.
    Rows with no valid token get all zeros.

    Args:
      mask: ``[B, T]`` 0/1 mask (holes allowed).

    Returns:
      ``[B, T]`` float one-hot.
    """
    m = mask > 0
    after = jnp.flip(jnp.cumsum(jnp.flip(m, -1), axis=-1), -1)  # valid tokens at s >= t
    return (m & (after == 1)).astype(jnp.float32)


def group_view(x: jax.Array, group_size: int) -> jax.Array:
    """Reshapes ``[B, ...]`` to ``[B // G, G, ...]`` (rows of a group are contiguous).

    Args:
      x: ``[B, ...]`` with ``B`` divisible by ``group_size``.
      group_size: ``G``.

    Returns:
      ``[num_groups, G, ...]``.
    """
    b = x.shape[0]
    if b % group_size:
        raise ValueError(f"batch size {b} is not a multiple of group_size {group_size}")
    return x.reshape((b // group_size, group_size) + x.shape[1:])
