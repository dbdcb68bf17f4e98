"""The attention core: masked causal grouped-query attention, softmax in fp32.

Shapes as in ``upt_jax.models.transformer``: ``B`` batch, ``T`` queries, ``S`` keys (cache slots),
``H`` query heads, ``K`` key/value heads, ``G = H / K``, ``Dh`` head dim.

The core runs with the heads before the tokens (``[B, K, G, T, Dh]``) and the mask as an additive
bias: on XLA CPU the GRPO update step measured 3–6% faster than with the tokens first and the
mask as a select, whose backward is one more pass over the ``[B, K, G, T, S]`` scores
(docs/performance.md).

Without a cache, rows longer than ``QUERY_BLOCK`` tokens run in causal query blocks
(``causal_query_block``): the queries of a block read only the keys up to the block's end, the
later keys being masked for all of them. The scores above the diagonal's blocks are never
computed: about half the attention's work and memory on long rows (the GRPO update of 4 × 1024
tokens ran 1.31× faster on the ``tiny`` preset and 1.33× on ``small``, on XLA CPU;
docs/performance.md).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

_NEG = -0.7 * float(np.finfo(np.float32).max)

QUERY_BLOCK = 128  # causal query blocks hold at least this many queries ...
MAX_QUERY_BLOCKS = 8  # ... and a row is split into at most this many


def causal_query_block(t: int) -> int | None:
    """Queries per causal block for a row of ``t`` tokens without a cache (``attend``'s
    ``query_block``): ``max(QUERY_BLOCK, ceil(t / MAX_QUERY_BLOCKS))``, or None (one block) when
    that is not below ``t``. Blocks of ``b`` queries compute ``(n + 1) / 2n`` of the full scores
    for ``n = ceil(t / b)`` blocks (3/4 at 2 blocks, 9/16 at 8)."""
    block = max(QUERY_BLOCK, -(-t // MAX_QUERY_BLOCKS))
    return block if block < t else None


def attend(q, k, v, key_valid, query_slots, key_slots, segment_ids=None, query_block=None):
    """Masked causal GQA: softmax in fp32.

    Args:
      q: ``[B, T, H, Dh]``; k, v: ``[B, S, K, Dh]``; key_valid: ``[B, S]`` bool;
      query_slots: ``[T]`` int; key_slots: ``[S]`` int (key s is visible to query t iff
      ``key_valid[b, s]`` and ``key_slots[s] <= query_slots[t]``);
      segment_ids: None, or ``[B, T]`` int with ``S = T`` (no cache): key s is visible to query
      t only if also ``segment_ids[b, s] == segment_ids[b, t]``;
      query_block: None, or queries per causal block (`causal_query_block`), for
      ``query_slots = key_slots = arange(T)`` only: the block of queries ``[lo, hi)`` reads the
      keys ``[0, hi)``, every later key being invisible to it. The same output for every query
      that sees a key, up to float rounding (the softmax sums skip exact zeros); a query that
      sees none (a padding slot before a row's first token, whose output is never read) averages
      its block's values instead of all ``S``.
    Returns:
      ``[B, T, H, Dh]``.
    """
    t, s = q.shape[1], k.shape[1]
    visible = _visible(key_valid, query_slots, key_slots, segment_ids)
    qg = _heads_first(q, k.shape[2])
    kt, vt = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, S, Dh]
    if query_block is None or query_block >= t:
        return _merge_heads(_attend_heads(qg, "bksd", kt, vt, visible))
    if s != t:
        raise ValueError(f"query_block needs the keys to be the queries' own {t} slots, got {s} keys")
    return _merge_heads(_blocked(qg, "bksd", kt, vt, visible, query_block))


def _blocked(qg, k_spec: str, k, v, visible, query_block: int, offset: int = 0):
    """`_attend_heads` in causal query blocks: the queries ``[lo, hi)`` (at slots ``offset + lo ..``)
    read the keys ``[0, offset + hi)``, the later ones being invisible to them (slots ``arange``)."""
    t = qg.shape[3]
    key_axis = 3 if k_spec == "bkds" else 2
    blocks = []
    for lo in range(0, t, query_block):
        hi = min(lo + query_block, t)
        e = offset + hi
        kb = jax.lax.slice_in_dim(k, 0, e, axis=key_axis)
        blocks.append(_attend_heads(qg[:, :, :, lo:hi], k_spec, kb, v[:, :, :e], visible[:, lo:hi, :e]))
    return jnp.concatenate(blocks, axis=3)


def attend_cached(q, k_t, v, key_valid, query_slots, key_slots, key_limit=None, query_block=None):
    """``attend`` over a ``KVCache`` layer: ``k_t [B, K, Dh, S]`` (transposed keys), ``v [B, K, S, Dh]``.

    A one-token decode step runs two plain batched matmuls over ``(b, k)`` on the cache as stored;
    a multi-token prefill reads the cache as stored too (``_attend_heads``).

    ``key_limit``: None, or the static number of slots in use after this step's ``T`` tokens were
    written (``KVCache.static_index + T``; the queries are at slots ``key_limit − T ..``, the keys
    at ``arange(S)``): only the keys ``[0, key_limit)`` are read, the later slots being empty;
    ``query_block`` (with ``key_limit`` only): a multi-token pass in causal query blocks of that
    many queries, offset by the ``key_limit − T`` slots before them (``attend``'s ``query_block``).
    """
    b, t, h, dh = q.shape
    kh = k_t.shape[1]
    if key_limit is not None:
        k_t, v = k_t[..., :key_limit], v[:, :, :key_limit]
        key_valid, key_slots = key_valid[:, :key_limit], key_slots[:key_limit]
    if query_block is not None and key_limit is None:
        raise ValueError("attend_cached: query_block needs a static key_limit (the slots before the queries)")
    if t > 1:
        visible = _visible(key_valid, query_slots, key_slots)
        if query_block is not None and query_block < t:
            return _merge_heads(_blocked(_heads_first(q, kh), "bkds", k_t, v, visible, query_block, key_limit - t))
        return _merge_heads(_attend_heads(_heads_first(q, kh), "bkds", k_t, v, visible))
    q1 = q.reshape(b, kh, h // kh, dh)  # t = 1
    scores = _scores("bkgd,bkds->bkgs", q1, k_t)[:, :, :, None]
    probs = _masked_softmax(scores, dh, key_valid, query_slots, key_slots).astype(v.dtype)
    return jnp.einsum("bkgs,bksd->bkgd", probs[:, :, :, 0], v).reshape(b, t, h, dh)


def _heads_first(q, kh: int):
    """``q [B, T, H, Dh]`` → ``[B, K, G, T, Dh]`` (``kh = K`` key/value heads)."""
    b, t, h, dh = q.shape
    return q.reshape(b, t, kh, h // kh, dh).transpose(0, 2, 3, 1, 4)


def _merge_heads(out):
    """``[B, K, G, T, Dh]`` → ``[B, T, H, Dh]``."""
    b, kh, g, t, dh = out.shape
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, kh * g, dh)


def _attend_heads(qg, k_spec: str, k, v, visible):
    """``qg [B, K, G, T, Dh]``, ``k [B, K, S, Dh]`` (``k_spec = "bksd"``) or ``[B, K, Dh, S]``
    (``"bkds"``), ``v [B, K, S, Dh]``, ``visible [B, T, S]`` bool → ``[B, K, G, T, Dh]``.

    The mask is added as a bias (0 or ``_NEG``): the same probabilities as selecting ``_NEG``
    (a score is far below ``_NEG``'s float spacing), and a backward that is the softmax's alone.
    """
    dh = qg.shape[-1]
    scores = _scores(f"bkgtd,{k_spec}->bkgts", qg, k) * (1.0 / math.sqrt(dh))
    bias = jnp.where(visible, 0.0, _NEG).astype(jnp.float32)[:, None, None]  # [B, 1, 1, T, S]
    probs = jax.nn.softmax(scores + bias, axis=-1).astype(v.dtype)
    return jnp.einsum("bkgts,bksd->bkgtd", probs, v)


def _scores(spec: str, q, k):
    """``q · k`` accumulated and returned in fp32. XLA CPU's fallback (Eigen) dot has no
    bf16 × bf16 → fp32 kernel and fails at run time for some shapes (bf16 prefill/decode), so
    on CPU the operands are upcast first; accelerators take bf16 operands directly."""
    if q.dtype != jnp.float32 and jax.default_backend() == "cpu":
        q, k = q.astype(jnp.float32), k.astype(jnp.float32)
    return jnp.einsum(spec, q, k, preferred_element_type=jnp.float32)


def _visible(key_valid, query_slots, key_slots, segment_ids=None):
    """``[B, T, S]`` bool: key s is visible to query t (see ``attend``)."""
    visible = key_valid[:, None, :] & (key_slots[None, None, :] <= query_slots[None, :, None])
    if segment_ids is not None:
        visible = visible & (segment_ids[:, :, None] == segment_ids[:, None, :])
    return visible


def _masked_softmax(scores, dh, key_valid, query_slots, key_slots):
    """``scores [B, K, G, T, S]`` fp32 → attention probabilities, invisible keys at 0 (the decode step)."""
    scores = scores * (1.0 / math.sqrt(dh))
    scores = jnp.where(_visible(key_valid, query_slots, key_slots)[:, None, None], scores, _NEG)
    return jax.nn.softmax(scores, axis=-1)
