"""Aggregation: how token terms are summed and normalised.

Every mode is written as per-token numerator weights ``w_{i,t}`` and per-row
denominator contributions ``d_i``, both local to a row, so that

    loss = Σ_{i,t} w_{i,t} ℓ_{i,t}  /  Σ_i d_i .

Because both sums run over rows, splitting the batch into micro-batches (or
shards) and adding the sums and the denominators separately gives exactly the
full-batch result; this is why the loss builders return ``(loss_sum,
denominator)`` and never a pre-divided mean.

| mode | ``w_{i,t}`` | ``d_i`` | loss |
|---|---|---|---|
| ``token-mean`` | ``m`` | ``Σ_t m`` | ``Σ m ℓ / Σ m`` |
| ``seq-mean-token-mean`` | ``m / Σ_t m`` | ``1`` | ``(1/B) Σ_i Σ_t m ℓ / Σ_t m`` |
| ``seq-mean-token-sum`` | ``m`` | ``1`` | ``(1/B) Σ_i Σ_t m ℓ`` |
| ``seq-mean-token-sum-norm`` | ``m / L`` | ``1`` | ``(1/B) Σ_i Σ_t m ℓ / L`` (Dr.GRPO) |

Rows with no valid token contribute ``d_i = 0``. ``rows_per_example`` divides
``d_i`` so that, e.g., a preference pair (2 rows) counts once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from upt_jax.upge._common import safe_div

TOKEN_MEAN = "token-mean"
SEQ_MEAN_TOKEN_MEAN = "seq-mean-token-mean"
SEQ_MEAN_TOKEN_SUM = "seq-mean-token-sum"
SEQ_MEAN_TOKEN_SUM_NORM = "seq-mean-token-sum-norm"
AGGREGATION_MODES = (TOKEN_MEAN, SEQ_MEAN_TOKEN_MEAN, SEQ_MEAN_TOKEN_SUM, SEQ_MEAN_TOKEN_SUM_NORM)


def aggregation_weights(
    mask: jax.Array,
    mode: str = TOKEN_MEAN,
    *,
    max_len: float | None = None,
    rows_per_example: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """Per-token numerator weights and per-row denominators of an aggregation mode.

    Math (``m = mask``, ``|y_i| = Σ_t m_{i,t}``, ``L = max_len``):

    * ``token-mean``:               ``w = m``,          ``d_i = |y_i|``
    * ``seq-mean-token-mean``:      ``w = m / |y_i|``,  ``d_i = 1[|y_i|>0]``
    * ``seq-mean-token-sum``:       ``w = m``,          ``d_i = 1[|y_i|>0]``
    * ``seq-mean-token-sum-norm``:  ``w = m / L``,      ``d_i = 1[|y_i|>0]``

    then ``d_i ← d_i / rows_per_example``. The loss is ``Σ w ℓ / Σ d``.

    Args:
      mask: ``[B, T]`` 0/1 mask of response tokens.
      mode: one of ``AGGREGATION_MODES``.
      max_len: the constant ``L`` of ``seq-mean-token-sum-norm``; defaults to
        ``T = mask.shape[-1]``. Pass it explicitly when micro-batches are padded
        to different lengths, or results will depend on the padding.
      rows_per_example: how many rows make one example of the mean (2 for
        chosen/rejected preference pairs).

    Returns:
      ``(weights [B, T], row_denominators [B])``; neither carries gradient.
    """
    mask = jnp.asarray(mask, jnp.float32)
    lengths = jnp.sum(mask, axis=-1)
    present = (lengths > 0).astype(jnp.float32)
    if mode == TOKEN_MEAN:
        w, d = mask, lengths
    elif mode == SEQ_MEAN_TOKEN_MEAN:
        w, d = mask * safe_div(1.0, lengths)[:, None], present
    elif mode == SEQ_MEAN_TOKEN_SUM:
        w, d = mask, present
    elif mode == SEQ_MEAN_TOKEN_SUM_NORM:
        length = mask.shape[-1] if max_len is None else max_len
        w, d = mask / length, present
    else:
        raise ValueError(f"unknown aggregation mode {mode!r}; expected one of {AGGREGATION_MODES}")
    return w, d / rows_per_example


def aggregate(
    token_terms: jax.Array,
    mask: jax.Array,
    mode: str = TOKEN_MEAN,
    *,
    max_len: float | None = None,
    rows_per_example: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """Reduces token terms to ``(loss_sum, denominator)``.

    Math: ``loss_sum = Σ_{i,t} w_{i,t} ℓ_{i,t}``, ``denominator = Σ_i d_i`` with
    ``(w, d) = aggregation_weights(mask, mode)``; the loss is their ratio, see
    `normalise`. Gradients flow through ``token_terms`` only.

    Args:
      token_terms: ``[B, T]`` per-token loss terms ``ℓ``.
      mask: ``[B, T]`` 0/1 mask.
      mode: aggregation mode, see `aggregation_weights`.
      max_len: ``L`` for ``seq-mean-token-sum-norm``.
      rows_per_example: rows per example of the mean.

    Returns:
      ``(loss_sum [], denominator [])``.
    """
    w, d = aggregation_weights(mask, mode, max_len=max_len, rows_per_example=rows_per_example)
    return jnp.sum(jnp.where(w > 0, w * token_terms, 0.0)), jnp.sum(d)


def normalise(loss_sum, denominator):
    """Turns ``(loss_sum, denominator)`` into the loss ``loss_sum / denominator``.

    Works on scalars ``[]`` or on matching dicts of scalars (one entry per loss
    term, as `upt_jax.upge.compute_loss` returns), in which case the terms are
    added: ``L = Σ_k S_k / D_k``. A term with ``D_k = 0`` contributes 0.

    Accumulating micro-batches: add the ``loss_sum`` and the ``denominator`` of
    every micro-batch separately (e.g. with ``jax.tree.map(jnp.add, ...)``) and
    call `normalise` once at the end.

    Args:
      loss_sum: scalar ``[]`` or ``dict[str, []]``.
      denominator: same structure as ``loss_sum``.

    Returns:
      Scalar ``[]`` loss.
    """
    if isinstance(loss_sum, dict):
        total = jnp.zeros((), jnp.float32)
        for k in loss_sum:
            total = total + safe_div(loss_sum[k], denominator[k])
        return total
    return safe_div(loss_sum, denominator)
