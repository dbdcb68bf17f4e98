"""Per-token log-probabilities (and entropy) without materialising ``[B, T, V]`` logits.

For hidden states ``h [B, T, D]`` and output kernel ``W [D, V]``:

    log π(o_t) = (h_t · W)[o_t] − logsumexp_v (h_t · W)[v]          (divided by a temperature τ)
    H_t        = logsumexp(z_t) − Σ_v softmax(z_t)_v · z_t[v]         (token entropy)

Truncated sampling (top-k / top-p): with ``kept_threshold θ [B, T]`` (the sampler's
``thresholds``) the distribution is renormalised over the kept set ``K_t = {v : z_t[v]/τ ≥ θ_t}``
(the largest entry always kept): ``log π̃(o_t) = z_t[o_t]/τ − logsumexp_{v∈K_t} z_t[v]/τ``, the
policy the token was drawn from; ``θ = −inf`` keeps every entry.

``token_logprobs`` scans over chunks of ``C`` positions; each chunk's body is rematerialised
(``jax.checkpoint``) so the backward pass recomputes its ``[B, C, V]`` logits instead of
storing them: peak temporary memory is ``O(B·C·V)`` instead of ``O(B·T·V)``. The recompute
costs one more ``[B, T, D] × [D, V]`` matmul (≈ 10 % of a small model's update step), so by
default (``remat="auto"``) it is only paid when the full fp32 logits would exceed
``AUTO_REMAT_BYTES`` (1 GiB): below that, one unchunked pass that keeps them is faster.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from upt_jax.models.rope import positions_from_mask
from upt_jax.models.transformer import KVCache, dense

AUTO_REMAT_BYTES = 1 << 30  # remat="auto": chunk + recompute when B·T·V fp32 logits exceed this


REMAT_MODES = ("auto", "always", "never")


def remat_logits(remat: str, b: int, t: int, v: int) -> bool:
    """Whether ``token_logprobs`` chunks and recomputes: ``remat`` ``"always"``/``"never"``, or
    ``"auto"`` (when the ``[B, T, V]`` fp32 logits would take more than ``AUTO_REMAT_BYTES``)."""
    if remat not in REMAT_MODES:
        raise ValueError(f"remat must be one of {REMAT_MODES}, got {remat!r}")
    return remat == "always" or (remat == "auto" and b * t * v * 4 > AUTO_REMAT_BYTES)


def kept_logits(logits: jax.Array, threshold: jax.Array) -> jax.Array:
    """``logits [..., V]`` with the entries below ``threshold [...]`` set to ``−inf`` (the largest
    entry always kept, so no row is empty): the logits of the top-k/top-p kept set."""
    thr = jnp.minimum(threshold[..., None], jnp.max(logits, axis=-1, keepdims=True))
    return jnp.where(logits >= thr, logits, -jnp.inf)


def _chunk_stats(h, kernel, targets, temperature, with_entropy, threshold=None):
    """h: [B, C, D], kernel: [D, V], targets: [B, C], threshold: [B, C] or None
    → (logp [B, C], entropy [B, C] or None)."""
    logits = dense(h, kernel)  # [B, C, V] fp32
    if temperature != 1.0:
        logits = logits / temperature
    if threshold is not None:
        logits = kept_logits(logits, threshold)
    lse = jax.nn.logsumexp(logits, axis=-1)
    tgt = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    logp = tgt - lse
    if not with_entropy:
        return logp, None
    probs = jnp.exp(logits - lse[..., None])
    plogits = probs * logits if threshold is None else jnp.where(probs > 0, probs * logits, 0.0)  # 0·(−inf)
    entropy = lse - jnp.sum(plogits, axis=-1)
    return logp, entropy


def token_logprobs(
    hidden: jax.Array,
    kernel: jax.Array,
    targets: jax.Array,
    *,
    chunk_size: int = 128,
    temperature: float = 1.0,
    return_entropy: bool = False,
    remat: str = "auto",
    kept_threshold: Optional[jax.Array] = None,
):
    """Chunked ``log softmax(h W / τ)[target]``.

    Args:
      hidden: ``[B, T, D]`` final hidden states (any float dtype; matmul accumulates in fp32).
      kernel: ``[D, V]`` output projection.
      targets: ``[B, T]`` int token ids whose log-probs are wanted.
      chunk_size: positions per chunk ``C`` (``T`` is padded up to a multiple of it).
      temperature: ``τ``; log-probs of the tempered distribution.
      return_entropy: also return the entropy of each position's distribution.
      remat: ``"always"``: chunks, each recomputed in the backward pass (memory ``O(B·C·V)``;
        forward-only passes pay nothing for it); ``"never"``: one pass holding ``[B, T, V]`` (no
        recompute); ``"auto"``: ``"always"`` when the logits would exceed ``AUTO_REMAT_BYTES``.
      kept_threshold: ``[B, T]`` top-k/top-p kept-set thresholds on ``z / τ`` (``−inf``: all kept);
        log-probs and entropies are then those of the renormalised kept set (module docstring).
    Returns:
      ``logp [B, T]`` fp32, and ``entropy [B, T]`` fp32 when ``return_entropy``.
    """
    b, t, d = hidden.shape
    if not remat_logits(remat, b, t, kernel.shape[-1]):
        return naive_token_logprobs(
            hidden,
            kernel,
            targets,
            temperature=temperature,
            return_entropy=return_entropy,
            kept_threshold=kept_threshold,
        )
    c = max(1, min(chunk_size, t))
    n = -(-t // c)
    pad = n * c - t
    thr = jnp.full((b, t), -jnp.inf, jnp.float32) if kept_threshold is None else kept_threshold
    if pad:
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, pad)))
        thr = jnp.pad(thr, ((0, 0), (0, pad)), constant_values=-jnp.inf)
    hs = hidden.reshape(b, n, c, d).swapaxes(0, 1)  # [n, B, C, D]
    ts = targets.reshape(b, n, c).swapaxes(0, 1)  # [n, B, C]
    ths = thr.reshape(b, n, c).swapaxes(0, 1)  # [n, B, C]
    cut = kept_threshold is not None

    @jax.checkpoint
    def body(h, tg, th):
        logp, ent = _chunk_stats(h, kernel, tg, temperature, return_entropy, th if cut else None)
        return (logp, ent) if return_entropy else (logp,)

    outs = jax.lax.map(lambda xs: body(*xs), (hs, ts, ths))
    unchunk = lambda x: x.swapaxes(0, 1).reshape(b, n * c)[:, :t]
    if return_entropy:
        return unchunk(outs[0]), unchunk(outs[1])
    return unchunk(outs[0])


def naive_token_logprobs(
    hidden, kernel, targets, *, temperature: float = 1.0, return_entropy: bool = False, kept_threshold=None
):
    """Reference implementation holding the full ``[B, T, V]`` logits (tests, benchmarks)."""
    logp, ent = _chunk_stats(hidden, kernel, targets, temperature, return_entropy, kept_threshold)
    return (logp, ent) if return_entropy else logp


def sequence_logprobs(
    model,
    tokens: jax.Array,
    attention_mask: Optional[jax.Array] = None,
    *,
    chunk_size: int = 128,
    temperature: float = 1.0,
    return_entropy: bool = False,
    remat: str = "auto",
    segment_ids: Optional[jax.Array] = None,
    positions: Optional[jax.Array] = None,
    kept_threshold: Optional[jax.Array] = None,
    columns: Optional[jax.Array] = None,
):
    """Log-probs of each token given its prefix, aligned with ``tokens``.

    ``logp[b, t] = log π(tokens[b, t] | tokens[b, <t])`` for ``t ≥ 1``; ``logp[:, 0] = 0``
    (nothing predicts the first token). Combine with a response mask ``[B, T]`` aligned
    with ``tokens``.

    Packed rows: with ``segment_ids [B, T]`` (0 = padding, see ``Transformer.hidden_states``) the
    prefix is the token's own segment, and ``logp`` (and entropy) is 0 at the first token of each
    segment and on padding, as at ``t = 0`` of an unpacked row.

    Args:
      model: a ``Transformer``.
      tokens: ``[B, T]`` int, left- or right-padded (or packed).
      attention_mask: ``[B, T]`` 0/1.
      remat: see ``token_logprobs``.
      segment_ids, positions: ``[B, T]`` int, packed rows (positions default to restarting at 0
        in each segment).
      kept_threshold: ``[B, T]`` aligned with ``tokens``: the kept-set threshold of the distribution
        ``tokens[b, t]`` was drawn from (the sampler's ``thresholds``; ``−inf`` on prompt, padding
        and untruncated tokens); see ``token_logprobs``.
      columns: ``[B, C]`` int, distinct per row: only these columns' log-probs (and entropies)
        are computed, the others are 0, so the output head runs on ``C`` positions, not ``T − 1``
        (a trainer passes each row's response columns: the prompt's log-probs are never read; TRL's
        ``logits_to_keep``). Column 0 has no prediction (0). Not with packed rows.
    Returns:
      ``logp [B, T]`` (and ``entropy [B, T]``, entropy of the distribution that predicted
      token t, 0 at t = 0) in fp32.
    """
    if columns is not None and segment_ids is not None:
        raise ValueError("sequence_logprobs: columns are for padded rows, not packed ones (segment_ids)")
    if segment_ids is None:
        hidden, _ = model.hidden_states(tokens, attention_mask=attention_mask, positions=positions)
    else:
        hidden, _ = model.hidden_states(
            tokens, attention_mask=attention_mask, positions=positions, segment_ids=segment_ids
        )
    if columns is not None:  # the hidden state before each column predicts it
        src = jnp.take_along_axis(hidden, jnp.maximum(columns.astype(jnp.int32) - 1, 0)[..., None], axis=1)
        return _head_at_columns(
            src, model.lm_head_kernel(), tokens, columns, chunk_size, temperature, return_entropy, remat, kept_threshold
        )
    out = token_logprobs(
        hidden[:, :-1],
        model.lm_head_kernel(),
        tokens[:, 1:],
        chunk_size=chunk_size,
        temperature=temperature,
        return_entropy=return_entropy,
        remat=remat,
        kept_threshold=None if kept_threshold is None else kept_threshold[:, 1:],
    )
    shift = lambda x: jnp.pad(x, ((0, 0), (1, 0)))
    if segment_ids is not None:  # a segment's first token is not predicted from the previous segment
        cont = shift((segment_ids[:, 1:] == segment_ids[:, :-1]) & (segment_ids[:, 1:] > 0))
        shift = lambda x: jnp.where(cont, jnp.pad(x, ((0, 0), (1, 0))), 0.0)
    if return_entropy:
        return shift(out[0]), shift(out[1])
    return shift(out)


def _head_at_columns(src, kernel, tokens, columns, chunk_size, temperature, return_entropy, remat, kept_threshold):
    """The output head on ``src [B, C, D]``, the hidden states that predict ``tokens``' ``columns
    [B, C]``: their log-probs (and entropies) scattered back to ``[B, T]``, 0 elsewhere and at column
    0 (nothing predicts it), as ``sequence_logprobs`` gives them."""
    columns = columns.astype(jnp.int32)
    take = lambda x: jnp.take_along_axis(x, columns, axis=1)  # noqa: E731
    out = token_logprobs(
        src,
        kernel,
        take(tokens),
        chunk_size=chunk_size,
        temperature=temperature,
        return_entropy=return_entropy,
        remat=remat,
        kept_threshold=None if kept_threshold is None else take(kept_threshold),
    )
    rows = jnp.arange(tokens.shape[0])[:, None]

    def scatter(x):
        return jnp.zeros(tokens.shape, x.dtype).at[rows, columns].set(jnp.where(columns > 0, x, 0.0))

    return (scatter(out[0]), scatter(out[1])) if return_entropy else scatter(out)


def shared_prompt_logprobs(
    model,
    tokens: jax.Array,
    attention_mask: jax.Array,
    *,
    group_size: int,
    response_len: int,
    chunk_size: int = 128,
    temperature: float = 1.0,
    return_entropy: bool = False,
    remat: str = "auto",
    kept_threshold: Optional[jax.Array] = None,
):
    """``sequence_logprobs`` at the last ``response_len`` columns of rows whose prompts are shared,
    with each group's prompt run through the decoder once instead of ``group_size`` times.

    Rows ``[B, P + R]`` (``R = response_len``) come in groups of ``n = group_size`` contiguous rows
    with the same prompt columns ``[:, :P]`` (tokens and mask: a step's rollouts of one question,
    a preference pair). The decoder runs on the ``B / n`` prompts, writing their keys and values
    into a cache that each of the group's ``n`` response blocks ``[B, R]`` continues from (the
    responses attend to the prompt's keys and causally to their own, as in the full row); the
    output head runs on the response columns only. The gradient reaches the prompt through the
    cache, summed over the group. Equal to ``sequence_logprobs(..., columns=<the last R>)`` up to
    float reordering; 0 on the prompt columns.

    Compute: the decoder on ``B·R + (B/n)·P`` tokens instead of ``B·(P + R)``; the model's
    ``remat`` policy applies as on the full rows. Returns ``logp [B, P + R]`` (and ``entropy``), fp32.
    """
    b, t = tokens.shape
    n, r = int(group_size), int(response_len)
    p = t - r
    if n < 1 or b % n:
        raise ValueError(f"shared_prompt_logprobs: {b} rows are not whole groups of {n}")
    if not 0 < r < t:
        raise ValueError(f"shared_prompt_logprobs: response_len {r} must be in (0, {t})")
    positions = positions_from_mask(attention_mask)  # as in the full row
    cache = KVCache.init(model.cfg, b // n, t, static_index=True)  # prompt, then responses: blocks
    h_prompt, cache = model.hidden_states(
        tokens[::n, :p],
        attention_mask=attention_mask[::n, :p],
        positions=positions[::n, :p],
        cache=cache,
        remat_with_cache=True,
    )
    group = lambda x: jnp.repeat(x, n, axis=0)  # noqa: E731 — [B/n, ...] -> each group's n rows
    cache = cache.replace(k=tuple(map(group, cache.k)), v=tuple(map(group, cache.v)), mask=group(cache.mask))
    h_resp, _ = model.hidden_states(
        tokens[:, p:],
        attention_mask=attention_mask[:, p:],
        positions=positions[:, p:],
        cache=cache,
        remat_with_cache=True,
    )
    src = jnp.concatenate([group(h_prompt[:, -1:]), h_resp[:, :-1]], axis=1)  # what predicts each response column
    columns = jnp.broadcast_to(jnp.arange(p, t), (b, r))
    return _head_at_columns(
        src, model.lm_head_kernel(), tokens, columns, chunk_size, temperature, return_entropy, remat, kept_threshold
    )


def jitted_logprobs(graphdef, *, chunk_size: int = 128, temperature: float = 1.0):
    """``jit((params, tokens, attention_mask, columns=None) → logp [B, T])``: `sequence_logprobs`
    of the model ``nnx.merge(graphdef, params)`` at ``temperature``, forward only (chunked with
    ``remat="always"``: one chunk's logits held, nothing recomputed without a backward pass); a
    frozen reference's or teacher's log-probs."""
    return jax.jit(
        lambda params, tokens, attn, columns=None: sequence_logprobs(
            nnx.merge(graphdef, params),
            tokens,
            attn,
            chunk_size=chunk_size,
            temperature=temperature,
            remat="always",
            columns=columns,
        )
    )
