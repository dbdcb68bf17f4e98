"""``upt_jax.models.transformer.attend`` with a hand-written backward (session 19, not landed).

The forward is ``upt_jax.models.attention``'s training path (heads first, the mask as an additive
bias). The backward is the flash-attention form: with the probabilities ``P`` and the output ``O``
saved, ``dS = P ∘ (dP − rowsum(dO ∘ O))`` (``rowsum(dP ∘ P) = rowsum(dO ∘ O)``, a reduction over
``Dh`` instead of ``S``), where autodiff's softmax backward takes two passes over ``[T, S]``.

    python -m benchmarks.update_ab --config tiny small \
        --patch upt_jax.models.transformer.attend=benchmarks.variants.attention_flash_bwd:attend

Measured in session 19 (docs/performance.md): tiny 1.020× (IQR 1.002–1.050), small 0.996×.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

_NEG = -0.7 * float(np.finfo(np.float32).max)  # upt_jax.models.attention's mask bias


@jax.custom_vjp
def _heads(qg, k, v, bias):
    """``qg [B, K, G, T, Dh]``, ``k, v [B, K, S, Dh]``, ``bias [B, 1, 1, T, S]`` fp32 → ``[B, K, G, T, Dh]``."""
    return _forward(qg, k, v, bias)[0]


def _forward(qg, k, v, bias):
    scores = jnp.einsum("bkgtd,bksd->bkgts", qg, k, preferred_element_type=jnp.float32)  # fp32 models
    scores = scores * (1.0 / math.sqrt(qg.shape[-1]))
    probs = jax.nn.softmax(scores + bias, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bksd->bkgtd", probs, v)
    return out, (qg, k, v, probs, out)


def _backward(res, d_out):
    qg, k, v, probs, out = res
    scale = 1.0 / math.sqrt(qg.shape[-1])
    dv = jnp.einsum("bkgts,bkgtd->bksd", probs, d_out).astype(v.dtype)
    dp = jnp.einsum("bkgtd,bksd->bkgts", d_out, v, preferred_element_type=jnp.float32)
    row = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
    ds = (probs.astype(jnp.float32) * (dp - row) * scale).astype(qg.dtype)
    dq = jnp.einsum("bkgts,bksd->bkgtd", ds, k).astype(qg.dtype)
    dk = jnp.einsum("bkgts,bkgtd->bksd", ds, qg).astype(k.dtype)
    return dq, dk, dv, None


_heads.defvjp(_forward, _backward)


def attend(q, k, v, key_valid, query_slots, key_slots, segment_ids=None, query_block=None):
    """``upt_jax.models.attention.attend``'s signature and result (``[B, T, H, Dh]``); fp32 models.
    One block whatever ``query_block`` (the variant predates session 20's causal query blocks)."""
    visible = key_valid[:, None, :] & (key_slots[None, None, :] <= query_slots[None, :, None])  # [B, T, S]
    if segment_ids is not None:
        visible = visible & (segment_ids[:, :, None] == segment_ids[:, None, :])
    b, t, h, dh = q.shape
    kh = k.shape[2]
    qg = q.reshape(b, t, kh, h // kh, dh).transpose(0, 2, 3, 1, 4)  # [B, K, G, T, Dh]
    g = h // kh
    bias = jnp.where(visible, 0.0, _NEG).astype(jnp.float32)[:, None, None]
    out = _heads(qg, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), bias)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, kh * g, dh)
