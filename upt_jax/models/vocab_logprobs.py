"""Vocabulary-level log-probs for distillation: the student's log-softmax over the vocabulary
(`vocab_logprobs`, differentiated) and a frozen teacher's next-token logits (`teacher_logits`,
dense or top-k), both aligned with the tokens they predict and computed in position chunks when
gathered, so ``B × T × V`` is never held for top-k."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["vocab_logprobs", "teacher_logits"]


def _chunked(fn, hidden, extra, chunk_size):
    """``fn(h [B, C, D], x [B, C, ...]) -> pytree of [B, C, ...]`` over position chunks of ``hidden
    [B, T, D]`` and ``extra [B, T, ...]`` (or None); each chunk rematerialised in the backward pass."""
    b, t, d = hidden.shape
    c = max(1, min(chunk_size, t))
    n = -(-t // c)
    pad = n * c - t
    split = lambda x: (
        jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2)).reshape(b, n, c, *x.shape[2:]).swapaxes(0, 1)
    )
    xs = (split(hidden), None if extra is None else split(extra))
    outs = jax.lax.map(lambda a: jax.checkpoint(fn)(*a), xs)
    return jax.tree.map(lambda y: y.swapaxes(0, 1).reshape(b, n * c, *y.shape[3:])[:, :t], outs)


def _shift(x, value=0):
    """Position ``t`` of the result holds ``x``'s position ``t − 1`` (aligned with the token it predicts)."""
    return jnp.pad(x, ((0, 0), (1, 0)) + ((0, 0),) * (x.ndim - 2), constant_values=value)


def vocab_logprobs(
    model,
    tokens: jax.Array,
    attention_mask: jax.Array,
    *,
    ids: jax.Array | None = None,
    temperature: float = 1.0,
    chunk_size: int = 128,
):
    """The student's log-softmax over the vocabulary, aligned with ``tokens``.

    ``logq[b, t, v] = log softmax(z_{b, t−1} / τ)[v]``, the distribution that predicts ``tokens[b, t]``
    (``0`` at ``t = 0``); ``H[b, t]`` its entropy.

    Args:
      model: a ``Transformer`` (differentiated through).
      tokens, attention_mask: ``[B, T]``.
      ids: ``None`` for the whole vocabulary, or ``[B, T, k]`` int entries to gather (computed in
        chunks of ``chunk_size`` positions: peak ``O(B·C·V)`` instead of ``O(B·T·V)``).
      temperature: ``τ``.
    Returns:
      ``(logq [B, T, V] or [B, T, k], entropy [B, T])`` in fp32.
    """
    hidden, _ = model.hidden_states(tokens, attention_mask=attention_mask)
    kernel = model.lm_head_kernel()

    def chunk(h, x):
        z = jnp.einsum("bcd,dv->bcv", h, kernel.astype(h.dtype), preferred_element_type=jnp.float32)
        logq = jax.nn.log_softmax(z / temperature, axis=-1)
        ent = -jnp.sum(jnp.exp(logq) * logq, axis=-1)
        return (logq if x is None else jnp.take_along_axis(logq, x, axis=-1)), ent

    if ids is None:
        logq, ent = chunk(hidden[:, :-1], None)
    else:
        logq, ent = _chunked(chunk, hidden[:, :-1], ids[:, 1:], chunk_size)
    return _shift(logq), _shift(ent)


def teacher_logits(
    model,
    tokens: jax.Array,
    attention_mask: jax.Array,
    *,
    vocab_size: int,
    top_k: int | None = None,
    chunk_size: int = 128,
):
    """A (frozen) teacher's next-token logits, aligned with ``tokens`` like `vocab_logprobs`.

    Only the first ``min(V_teacher, vocab_size)`` entries are used (models of one tokenizer may pad
    their vocabularies differently, e.g. Qwen2.5-7B 152064 vs 1.5B 151936); a smaller teacher
    vocabulary is padded with ``−1e9`` (probability 0) up to the student's ``vocab_size``.

    Args:
      model: the teacher ``Transformer``.
      tokens, attention_mask: ``[B, T]``.
      vocab_size: the student's ``V``.
      top_k: ``None``: dense logits; ``k``: only the ``k`` largest, computed in position chunks.
    Returns:
      ``logits [B, T, V]`` fp32, or ``(values [B, T, k] fp32, ids [B, T, k] int32)``; position 0 is 0.
    """
    hidden, _ = model.hidden_states(tokens, attention_mask=attention_mask)
    hidden = jax.lax.stop_gradient(hidden[:, :-1])
    kernel = model.lm_head_kernel()[:, :vocab_size]
    logits = lambda h: jnp.einsum("bcd,dv->bcv", h, kernel.astype(h.dtype), preferred_element_type=jnp.float32)
    if top_k is None:
        z = logits(hidden)
        z = jnp.pad(z, ((0, 0), (0, 0), (0, vocab_size - z.shape[-1])), constant_values=-1e9)
        return _shift(z)
    values, ids = _chunked(lambda h, _: jax.lax.top_k(logits(h), top_k), hidden, None, chunk_size)
    return _shift(values), _shift(ids.astype(jnp.int32))
