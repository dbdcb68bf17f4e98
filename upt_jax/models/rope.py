"""Rotary position embeddings (RoPE) of the transformer, with Llama 3's frequency scaling, and
token positions from an attention mask (left padding) or from packed segments."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from upt_jax.models.config import ModelConfig

__all__ = [
    "rope_inv_freq",
    "rope_tables",
    "rope_table",
    "rope_from_table",
    "rotate",
    "apply_rope",
    "positions_from_mask",
    "positions_from_segments",
]


def rope_inv_freq(cfg: ModelConfig) -> np.ndarray:
    """Inverse frequencies ``[Dh/2]`` (float32), with ``linear`` or ``llama3`` scaling.

    ``llama3`` (Meta, 2024): wavelengths longer than ``orig_ctx / low_freq_factor`` are divided
    by ``factor``, shorter than ``orig_ctx / high_freq_factor`` kept, and those in between
    interpolated smoothly.
    """
    dim = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim))
    inv = inv.astype(np.float32)
    sc = cfg.rope_scaling_dict
    kind = sc.get("rope_type", "default")
    if kind == "linear":
        inv = inv / np.float32(sc["factor"])
    elif kind == "llama3":
        factor = sc["factor"]
        low, high = sc.get("low_freq_factor", 1.0), sc.get("high_freq_factor", 4.0)
        old_ctx = sc["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old_ctx / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv = np.where(medium, smoothed, scaled).astype(np.float32)
    return inv


def rope_tables(positions: jax.Array, inv_freq) -> tuple[jax.Array, jax.Array]:
    """``cos, sin`` ``[B, T, 1, Dh]`` fp32 of the rotary phases ``positions · inv_freq``.

    Computed once per forward pass and shared by every layer (XLA may still recompute the cheap
    cos/sin inside each layer's fused kernel).
    """
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)  # [B, T, Dh/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]  # [B, T, 1, Dh]
    return jnp.cos(emb), jnp.sin(emb)


def rope_table(inv_freq, max_len: int) -> tuple[jax.Array, jax.Array]:
    """``cos, sin`` ``[max_len, Dh]`` fp32 for positions ``0 .. max_len − 1``: a decode loop builds it
    once and gathers its rows per step (``rope_from_table``) instead of evaluating cos/sin at
    every step in every layer."""
    cos, sin = rope_tables(jnp.arange(max_len, dtype=jnp.int32)[None], inv_freq)
    return cos[0, :, 0], sin[0, :, 0]


def rope_from_table(table: tuple[jax.Array, jax.Array], positions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Rows of a ``rope_table`` for ``positions [B, T]`` → ``cos, sin [B, T, 1, Dh]`` (as ``rope_tables``)."""
    return tuple(jnp.take(t, positions, axis=0)[:, :, None, :] for t in table)


def rotate(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotary embedding with precomputed ``rope_tables``, "rotate-half" layout (as Hugging Face).
    ``x [B, T, N, Dh]`` → same shape and dtype."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos.astype(x.dtype) + rotated * sin.astype(x.dtype)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
    """Rotary embedding, "rotate-half" layout (as Hugging Face).

    Args:
      x: ``[B, T, N, Dh]``.
      positions: ``[B, T]`` int.
      inv_freq: ``[Dh/2]``.
    Returns:
      ``[B, T, N, Dh]`` in ``x.dtype``.
    """
    return rotate(x, *rope_tables(positions, inv_freq))


def positions_from_mask(attention_mask: jax.Array) -> jax.Array:
    """``[B, T]`` 0/1 mask → ``[B, T]`` int32 positions (``cumsum - 1``, 0 on left padding)."""
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)


def positions_from_segments(segment_ids: jax.Array) -> jax.Array:
    """``[B, T]`` segment ids (contiguous runs) → ``[B, T]`` int32 positions that restart at 0
    where the id changes: ``t − (first column of t's run)``. Padding (id 0) gets positions too;
    nothing attends to it."""
    seg = jnp.asarray(segment_ids)
    t = jnp.arange(seg.shape[-1], dtype=jnp.int32)
    start = jnp.concatenate([jnp.ones_like(seg[:, :1], bool), seg[:, 1:] != seg[:, :-1]], axis=-1)
    first = jax.lax.cummax(jnp.where(start, t, 0), axis=seg.ndim - 1)
    return (t - first).astype(jnp.int32)
