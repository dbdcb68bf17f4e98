"""A Flax NNX decoder-only transformer for the Llama 3, Qwen2/2.5 and Qwen3 families.

Shapes: ``B`` batch, ``T`` new tokens in this call, ``S`` cache slots, ``D`` hidden size,
``H`` query heads, ``K`` key/value heads, ``G = H / K`` queries per KV head, ``Dh`` head dim,
``V`` vocabulary.

Padding and positions. Batches are left-padded: ``attention_mask[b, t] = 1`` on real tokens.
The position of a real token is the number of real tokens before it in its row
(``positions = cumsum(mask) - 1``), so a left-padded row gets the same RoPE phases as the
unpadded sequence. Keys that are padding are never attended to.

KV cache. ``KVCache`` is a pytree passed in and returned (no hidden state in the module):
slot ``s`` of every row holds the token written at call step ``s``; keys are stored
``[B, K, Dh, S]`` and values ``[B, K, S, Dh]``, the layouts the two attention matmuls read, so a
decode step never transposes the cache (with ``[B, S, K, Dh]`` XLA CPU copied every layer's
whole cache into that layout at every step: a quarter of the decode time); ``cache.mask`` marks the
slots that hold real tokens; ``cache.index`` is the next slot to write. Queries at slot ``i``
attend to valid slots ``≤ i``. This is what the sampler's prefill + decode loop uses.

Packed rows (no cache). ``segment_ids [B, T]`` puts several sequences in one row: ``0`` on
padding, ``1, 2, …`` on the tokens of each sequence (contiguous). A query attends only to the
keys of its own segment, causally, and positions restart at 0 in each segment
(``positions_from_segments``), so each sequence gets exactly what it gets alone in its row.
"""

from __future__ import annotations

from typing import Optional

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from upt_jax.models.attention import attend, attend_cached, causal_query_block
from upt_jax.models.config import ModelConfig
from upt_jax.models.rope import (
    apply_rope,
    positions_from_mask,
    positions_from_segments,  # noqa: F401
    rope_from_table,
    rope_inv_freq,
    rope_table,
    rope_tables,
    rotate,
)


# ----------------------------------------------------------------------------- cache
@flax.struct.dataclass
class KVCache:
    """Per-layer keys and values for incremental decoding.

    Attributes:
      k: tuple of ``L`` arrays ``[B, K, Dh, S]`` (compute dtype), keys transposed.
      v: tuple of ``L`` arrays ``[B, K, S, Dh]``.
      mask: ``[B, S]`` bool, slot holds a real (non-padding) token.
      index: ``[]`` int32, the next slot to write.
      static_index: ``index`` as a Python int when it is known at trace time, else None (static:
        a cache passed through a loop whose carry it is must have it None). With it, a pass of
        ``T`` tokens reads only the slots ``[0, static_index + T)`` and runs long passes in causal
        query blocks (`upt_jax.models.attention.attend_cached`).
    """

    k: tuple
    v: tuple
    mask: jax.Array
    index: jax.Array
    static_index: int | None = flax.struct.field(pytree_node=False, default=None)

    @classmethod
    def init(cls, cfg: ModelConfig, batch: int, max_len: int, dtype=None, *, static_index: bool = False) -> "KVCache":
        """An empty cache of ``max_len`` slots (``static_index``: track the index statically, from 0)."""
        dtype = dtype or cfg.jnp_dtype
        k_shape = (batch, cfg.num_kv_heads, cfg.head_dim, max_len)
        v_shape = (batch, cfg.num_kv_heads, max_len, cfg.head_dim)
        return cls(
            k=tuple(jnp.zeros(k_shape, dtype) for _ in range(cfg.num_layers)),
            v=tuple(jnp.zeros(v_shape, dtype) for _ in range(cfg.num_layers)),
            mask=jnp.zeros((batch, max_len), bool),
            index=jnp.zeros((), jnp.int32),
            static_index=0 if static_index else None,
        )

    @property
    def max_len(self) -> int:
        return self.mask.shape[1]


# ----------------------------------------------------------------------------- layers
class RMSNorm(nnx.Module):
    """``y = w · x / sqrt(mean(x²) + eps)``; statistics in fp32, as Hugging Face. ``x: [..., D]``."""

    def __init__(self, dim: int, eps: float, *, param_dtype=jnp.float32):
        self.weight = nnx.Param(jnp.ones((dim,), param_dtype))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        dt = x.dtype
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.weight.value.astype(dt) * x32.astype(dt)


@jax.custom_vjp
def dense_cpu(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x [..., D] · w [D, F] → [..., F]`` whose weight gradient ``xᵀ g`` reads ``xᵀ`` materialised.

    Plain autodiff gives XLA CPU a dot contracting the token axis of both operands; its layout
    assignment then transposes the ``[tokens, F]`` cotangent, fused with the elementwise
    backward of SwiGLU into a slow strided loop (17 % of the small update step in the profile).
    Transposing ``x`` (the smaller operand) behind an optimisation barrier leaves a canonical
    ``[D, tokens] · [tokens, F]`` matmul: the MLP's forward + backward runs 1.8× faster.
    """
    return jnp.einsum("...d,df->...f", x, w)


def _dense_cpu_fwd(x, w):
    return dense_cpu(x, w), (x, w)


def _dense_cpu_bwd(res, g):
    x, w = res
    dx = jnp.einsum("...f,df->...d", g, w)
    x_t = jax.lax.optimization_barrier(x.reshape(-1, x.shape[-1]).T)  # [D, tokens]
    return dx, (x_t @ g.reshape(-1, g.shape[-1])).astype(w.dtype)


dense_cpu.defvjp(_dense_cpu_fwd, _dense_cpu_bwd)


def dense(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x [..., D] · w [D, F] → [..., F]`` (fp32 accumulation), through ``dense_cpu`` on XLA CPU."""
    if jax.default_backend() == "cpu" and x.dtype == w.dtype == jnp.float32:
        return dense_cpu(x, w)
    return jnp.einsum("...d,df->...f", x, w.astype(x.dtype), preferred_element_type=jnp.float32)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, out_sharding=None):
    """The projections' ``dot_general``: ``dense_cpu`` for ``x [..., D] · w [D, F]`` on XLA CPU,
    ``jax.lax.dot_general`` everywhere else (accelerator compilers handle the transposes)."""
    (lc, rc), (lb, rb) = dimension_numbers
    if (
        jax.default_backend() == "cpu"
        and tuple(lc) == (lhs.ndim - 1,)
        and tuple(rc) == (0,)
        and not lb
        and not rb
        and rhs.ndim == 2
        and precision is None
        and preferred_element_type is None
        and out_sharding is None
    ):
        return dense_cpu(lhs, rhs)
    return jax.lax.dot_general(
        lhs,
        rhs,
        dimension_numbers,
        precision=precision,
        preferred_element_type=preferred_element_type,
        out_sharding=out_sharding,
    )


def _linear(cfg: ModelConfig, din: int, dout: int, bias: bool, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(
        din,
        dout,
        use_bias=bias,
        dtype=cfg.jnp_dtype,
        param_dtype=cfg.jnp_param_dtype,
        kernel_init=nnx.initializers.normal(0.02),
        dot_general=dot_general,
        rngs=rngs,
    )


class Attention(nnx.Module):
    """Grouped-query attention with RoPE, optional q/k/v bias and q/k RMSNorm (Qwen3)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, hd = cfg.hidden_size, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, hd
        self.q_proj = _linear(cfg, d, cfg.num_heads * hd, cfg.qkv_bias, rngs)
        self.k_proj = _linear(cfg, d, cfg.num_kv_heads * hd, cfg.qkv_bias, rngs)
        self.v_proj = _linear(cfg, d, cfg.num_kv_heads * hd, cfg.qkv_bias, rngs)
        self.o_proj = _linear(cfg, cfg.num_heads * hd, d, cfg.o_bias, rngs)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(hd, cfg.rms_norm_eps, param_dtype=cfg.jnp_param_dtype)
            self.k_norm = RMSNorm(hd, cfg.rms_norm_eps, param_dtype=cfg.jnp_param_dtype)
        else:
            self.q_norm = self.k_norm = None
        self.inv_freq = tuple(float(f) for f in rope_inv_freq(cfg))  # static, hashable

    def __call__(self, x, rope, key_valid, query_slots, key_slots, layer_cache=None, segment_ids=None, key_limit=None):
        """Args:
          x: ``[B, T, D]``; rope: ``rope_tables(positions, inv_freq)``; key_valid: ``[B, S]`` bool;
          query_slots: ``[T]``; key_slots: ``[S]``;
          layer_cache: ``(k [B, K, Dh, S], v [B, K, S, Dh], index [])`` or None (then S = T, the
            slots ``arange(T)`` as ``Transformer.hidden_states`` passes them, and long rows run in
            causal query blocks, `upt_jax.models.attention.causal_query_block`);
          segment_ids: ``[B, T]`` int or None (packed rows, no cache: same-segment keys only);
          key_limit: with a cache, the static slots in use after this pass (``attend_cached``).
        Returns:
          ``([B, T, D], (k, v) updated cache arrays or None)``.
        """
        b, t, _ = x.shape
        q = self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim)
        k = self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = rotate(q, *rope), rotate(k, *rope)
        new_cache = None
        block = causal_query_block(t)  # the blocks' policy, for both paths
        if layer_cache is None:
            out = attend(q, k, v, key_valid, query_slots, key_slots, segment_ids, block)
        else:
            ck, cv, index = layer_cache
            ck = jax.lax.dynamic_update_slice(ck, k.transpose(0, 2, 3, 1).astype(ck.dtype), (0, 0, 0, index))
            cv = jax.lax.dynamic_update_slice(cv, v.transpose(0, 2, 1, 3).astype(cv.dtype), (0, 0, index, 0))
            new_cache = (ck, cv)
            out = attend_cached(
                q, ck, cv, key_valid, query_slots, key_slots, key_limit, None if key_limit is None else block
            )
        return self.o_proj(out.reshape(b, t, self.num_heads * self.head_dim)), new_cache


class MLP(nnx.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``; ``[B, T, D] → [B, T, D]``."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = _linear(cfg, d, f, cfg.mlp_bias, rngs)
        self.up_proj = _linear(cfg, d, f, cfg.mlp_bias, rngs)
        self.down_proj = _linear(cfg, f, d, cfg.mlp_bias, rngs)

    def __call__(self, x):
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nnx.Module):
    """Pre-norm residual block: attention then MLP."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=cfg.jnp_param_dtype)
        self.self_attn = Attention(cfg, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=cfg.jnp_param_dtype)
        self.mlp = MLP(cfg, rngs=rngs)

    def __call__(self, x, rope, key_valid, query_slots, key_slots, layer_cache=None, segment_ids=None, key_limit=None):
        h, new_cache = self.self_attn(
            self.input_layernorm(x), rope, key_valid, query_slots, key_slots, layer_cache, segment_ids, key_limit
        )
        x = x + h
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, new_cache


REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Transformer(nnx.Module):
    """Decoder-only language model.

    ``model(tokens, attention_mask=...)`` returns ``(logits [B, T, V] fp32, cache)``;
    ``model.hidden_states(...)`` returns the final-norm hidden states ``[B, T, D]`` so that
    log-probs can be computed in chunks (``upt_jax.models.logprobs``) from
    ``model.lm_head_kernel()`` ``[D, V]`` without holding ``[B, T, V]``.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, remat: str = "none"):
        if remat not in REMAT_POLICIES:
            raise ValueError(f"remat must be one of {sorted(REMAT_POLICIES)}, got {remat!r}")
        self.cfg = cfg
        self.remat = remat
        self.embed_tokens = nnx.Embed(
            cfg.vocab_size,
            cfg.hidden_size,
            dtype=cfg.jnp_dtype,
            param_dtype=cfg.jnp_param_dtype,
            embedding_init=nnx.initializers.normal(0.02),
            rngs=rngs,
        )
        self.layers = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=cfg.jnp_param_dtype)
        if cfg.tie_word_embeddings:
            self.lm_head = None
        else:
            self.lm_head = _linear(cfg, cfg.hidden_size, cfg.vocab_size, False, rngs)

    def lm_head_kernel(self) -> jax.Array:
        """The output projection ``[D, V]`` (the transposed embedding when tied)."""
        if self.lm_head is None:
            return self.embed_tokens.embedding.value.T
        return self.lm_head.kernel.value

    def hidden_states(
        self,
        tokens: jax.Array,
        *,
        attention_mask: Optional[jax.Array] = None,
        positions: Optional[jax.Array] = None,
        cache: Optional[KVCache] = None,
        segment_ids: Optional[jax.Array] = None,
        rope=None,
        remat_with_cache: bool = False,
    ):
        """Run the decoder.

        Args:
          tokens: ``[B, T]`` int.
          attention_mask: ``[B, T]`` 0/1, 1 on real tokens (default all ones, or
            ``segment_ids > 0``).
          positions: ``[B, T]`` int (default ``positions_from_mask(attention_mask)``, or
            ``positions_from_segments(segment_ids)``; with a cache, pass the continuing positions).
          cache: a ``KVCache``; the ``T`` new tokens are written at ``cache.index``.
          segment_ids: ``[B, T]`` int, packed rows (0 = padding): a token attends only to earlier
            tokens of its own segment. Not with a cache.
          rope: precomputed ``(cos, sin)`` ``[B, T, 1, Dh]`` for ``positions`` (e.g.
            ``rope_from_table``); default computed from ``positions``.
          remat_with_cache: apply the model's ``remat`` policy with a cache too (a cached forward
            that is differentiated, `upt_jax.models.logprobs.shared_prompt_logprobs`; decoding
            never needs it).
        Returns:
          ``(hidden [B, T, D] in the compute dtype, updated cache or None)``.
        """
        b, t = tokens.shape
        if segment_ids is not None:
            if cache is not None:
                raise ValueError("segment_ids (packed rows) cannot be used with a KV cache")
            if attention_mask is None:
                attention_mask = (segment_ids > 0).astype(jnp.int32)
            if positions is None:
                positions = positions_from_segments(segment_ids)
        if attention_mask is None:
            attention_mask = jnp.ones((b, t), jnp.int32)
        valid = attention_mask.astype(bool)
        if positions is None:
            positions = positions_from_mask(attention_mask)
        if cache is None:
            key_valid, query_slots = valid, jnp.arange(t)
            key_slots = query_slots
        else:
            key_valid = jax.lax.dynamic_update_slice(cache.mask, valid, (0, cache.index))
            query_slots = cache.index + jnp.arange(t)
            key_slots = jnp.arange(cache.max_len)
        x = self.embed_tokens(tokens)
        if rope is None:  # shared by every layer
            rope = rope_tables(positions, self.layers[0].self_attn.inv_freq)
        limit = None if cache is None or cache.static_index is None else cache.static_index + t
        if limit is not None and limit > cache.max_len:
            raise ValueError(f"{t} tokens at slot {cache.static_index} overflow the cache's {cache.max_len} slots")
        new_k, new_v = [], []
        for i, layer in enumerate(self.layers):
            layer_cache = None if cache is None else (cache.k[i], cache.v[i], cache.index)
            if self.remat != "none" and (cache is None or remat_with_cache):
                fn = nnx.remat(lambda blk, *a: blk(*a, key_limit=limit), policy=REMAT_POLICIES[self.remat])
                x, lc = fn(layer, x, rope, key_valid, query_slots, key_slots, layer_cache, segment_ids)
            else:
                x, lc = layer(x, rope, key_valid, query_slots, key_slots, layer_cache, segment_ids, limit)
            if lc is not None:
                new_k.append(lc[0])
                new_v.append(lc[1])
        x = self.norm(x)
        if cache is not None:
            cache = KVCache(k=tuple(new_k), v=tuple(new_v), mask=key_valid, index=cache.index + t, static_index=limit)
        return x, cache

    def __call__(self, tokens, *, attention_mask=None, positions=None, cache=None, segment_ids=None):
        """Full logits ``[B, T, V]`` (fp32) and the updated cache. Use for short T only."""
        h, cache = self.hidden_states(
            tokens, attention_mask=attention_mask, positions=positions, cache=cache, segment_ids=segment_ids
        )
        logits = jnp.einsum("btd,dv->btv", h, self.lm_head_kernel().astype(h.dtype), preferred_element_type=jnp.float32)
        return logits, cache


def init_model(cfg: ModelConfig, seed: int | jax.Array = 0, *, remat: str = "none") -> Transformer:
    """A randomly initialised model (normal(0.02) weights, unit norms)."""
    key = seed if isinstance(seed, jax.Array) else jax.random.key(seed)
    return Transformer(cfg, rngs=nnx.Rngs(params=key), remat=remat)


def abstract_model(cfg: ModelConfig, *, remat: str = "none") -> Transformer:
    """A model whose parameters are ``jax.ShapeDtypeStruct`` (no memory allocated)."""
    return nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(params=0), remat=remat))
