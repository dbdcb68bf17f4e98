"""Packing prompts and responses into bucketed token batches for the update step.

A row is ``prompt ⧺ response``: the prompt is left-padded into ``P`` columns and the response
right-padded into ``R``, so every response starts at column ``P`` whatever its prompt's length
(and per-token arrays such as behaviour log-probs line up with it). ``mask`` is 1 on the
response tokens trained on. ``P`` and ``R`` are rounded up to buckets so that the update
step compiles once per bucket.

Packing (``pack_sequences``): the update step can instead run the model on rows that each hold
several of these sequences (``segment_ids``), and ``unpack`` its per-token log-probs back to the
padded ``[B, L]`` layout, so the loss sees exactly what it sees without packing while the model
computes far less padding (rollouts of 64 tokens no longer pad to a demonstration's 384).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from upt_jax.sampling.sampler import DEFAULT_LEN_BUCKETS, round_up

LEN_BUCKETS = DEFAULT_LEN_BUCKETS  # half-octave: a 332-token response pads to 384, not 512


def pack_rows(
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    *,
    pad_id: int,
    prompt_len: int | None = None,
    response_len: int | None = None,
    buckets: Sequence[int] = LEN_BUCKETS,
    response_values: dict[str, Sequence[np.ndarray]] | None = None,
    min_prompt_len: int = 0,
    logit_columns: bool = False,
) -> dict[str, np.ndarray]:
    """Rows ``prompt_i ⧺ response_i`` → ``tokens, attention_mask, mask [B, P + R]``.

    Args:
      prompts, responses: token-id lists (a response may be empty: its row trains on nothing).
      pad_id: padding id.
      prompt_len, response_len: ``P``, ``R`` (default: the longest, rounded up to a bucket).
        Longer prompts keep their last ``P`` tokens; longer responses are truncated to ``R``.
      response_values: per-token arrays aligned with each response (e.g. ``old_logp``),
        placed at the response's columns (0 elsewhere).
      min_prompt_len: a floor of the default ``P`` (before rounding up to a bucket): a run that
        passes the same floor every step keeps one prompt bucket while its prompts stay under it
        (see `upt_jax.train.shapes`).
      logit_columns: also return ``logit_columns`` int32 ``[B, R]``, the response columns
        ``P … P + R − 1``: the update step computes log-probs there only (`sequence_logprobs`'
        ``columns``), since ``mask`` is 0 on every prompt column.
    Returns:
      dict of numpy arrays: ``tokens`` int32, ``attention_mask`` int32, ``mask`` float32,
      ``truncated`` bool ``[B]`` (response cut to ``R``), and each ``response_values`` key
      float32 ``[B, P + R]``.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    p = prompt_len or round_up(max(min_prompt_len, max(len(x) for x in prompts)), buckets)
    r = response_len or round_up(max(1, max(len(x) for x in responses)), buckets)
    b = len(prompts)
    tokens = np.full((b, p + r), pad_id, np.int32)
    attn = np.zeros((b, p + r), np.int32)
    mask = np.zeros((b, p + r), np.float32)
    truncated = np.zeros((b,), bool)
    values = {k: np.zeros((b, p + r), np.float32) for k in (response_values or {})}
    for i, (q, a) in enumerate(zip(prompts, responses)):
        q = list(q)[-p:]
        a = list(a)
        truncated[i] = len(a) > r
        a = a[:r]
        tokens[i, p - len(q) : p] = q
        attn[i, p - len(q) : p] = 1
        tokens[i, p : p + len(a)] = a
        attn[i, p : p + len(a)] = 1
        mask[i, p : p + len(a)] = 1
        for k, v in (response_values or {}).items():
            vi = np.asarray(v[i], np.float32)[: len(a)]
            values[k][i, p : p + len(vi)] = vi
    if logit_columns:
        values["logit_columns"] = np.broadcast_to(np.arange(p, p + r, dtype=np.int32), (b, r)).copy()
    return dict(tokens=tokens, attention_mask=attn, mask=mask, truncated=truncated, **values)


# ----------------------------------------------------------------------------- sequence packing
PACKED_KEYS = ("packed_tokens", "packed_segment_ids", "packed_positions")  # rows [N, L_pack], not [B, L]


def row_bucket(n: int) -> int:
    """Smallest ``m · 2^e ≥ n`` with ``8 ≤ m ≤ 16`` (``n`` itself up to 8): at most 12.5 % empty
    rows, and few distinct row counts (so few compiled shapes)."""
    if n <= 8:
        return max(1, n)
    step = 2 ** (int(n).bit_length() - 4)
    return -(-n // step) * step


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Bins of item indices, each summing to ≤ ``capacity``: items longest first (ties by index, so
    deterministic), each into the first bin with room. Items of length 0 are left out.

    Raises ``ValueError`` if an item is longer than ``capacity``.
    """
    order = sorted((i for i, n in enumerate(lengths) if n > 0), key=lambda i: (-lengths[i], i))
    bins, free = [], []
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"a sequence of {n} tokens does not fit a packed row of {capacity}")
        for j, f in enumerate(free):
            if n <= f:
                bins[j].append(i)
                free[j] -= n
                break
        else:
            bins.append([i])
            free.append(capacity - n)
    return bins


def pack_sequences(
    tokens: np.ndarray,
    attention_mask: np.ndarray,
    *,
    row_multiple: int = 1,
    num_microbatches: int = 1,
    group_size: int = 1,
    pack_len: int | None = None,
    buckets: Sequence[int] = LEN_BUCKETS,
) -> dict[str, np.ndarray]:
    """Pack the sequences of padded rows (``pack_rows``' layout) several to a row.

    Sequence ``b`` is row ``b``'s real tokens (``attention_mask == 1``, in order). Sequences go
    first-fit-decreasing into rows of ``L_pack`` columns, each row holding segments ``1, 2, …``
    one after the other and padding (segment 0) at the end; positions restart at 0 in each
    segment, so the model sees each sequence as it sees it alone in its padded row.

    Micro-batches: original row ``b`` is in micro-batch ``(b // G) % M`` (``split_microbatches``
    with ``G = group_size``); each micro-batch is packed into its own ``n`` rows, micro-batch
    ``m``'s ``j``-th at packed row ``j·M + m`` (which is what ``split_microbatches`` with group 1
    hands to micro-batch ``m``), and ``pack_index`` points into those ``n`` local rows.
    ``n`` = the most rows a micro-batch needs, rounded up by ``row_bucket`` and to a multiple of
    ``row_multiple`` (the devices the rows are sharded over).

    Args:
      tokens, attention_mask: ``[B, L]``.
      row_multiple: ``n`` is a multiple of it.
      num_microbatches, group_size: ``M`` and ``G`` as in ``split_microbatches``.
      pack_len: ``L_pack`` (default: the longest sequence rounded up to a bucket, or ``L`` if that
        is shorter: a padded row's ``P + R`` can be tighter than the bucket of the longest
        ``prompt ⧺ response``, and packed rows are then never longer than the padded ones).
    Returns:
      ``packed_tokens``, ``packed_segment_ids``, ``packed_positions`` int32 ``[N = n·M, L_pack]``;
      ``pack_index`` int32 ``[B, L]`` (flat index ``row · L_pack + column`` of token ``(b, t)``
      in its micro-batch's packed rows; 0 where not valid) and ``pack_valid`` bool ``[B, L]``
      (``attention_mask`` as bool). Raises ``ValueError`` if a sequence is longer than ``pack_len``.
    """
    tokens = np.asarray(tokens)
    attn = np.asarray(attention_mask).astype(bool)
    b, width = tokens.shape
    m, g = num_microbatches, group_size
    if b % (m * g):
        raise ValueError(f"batch of {b} rows is not divisible into {m} micro-batches of whole groups of {g}")
    lengths = attn.sum(axis=1)
    lp = pack_len or min(round_up(max(1, int(lengths.max())), buckets), width)
    group = np.arange(b) // g
    micro = group % m
    bins = []  # per micro-batch: lists of original rows
    for mi in range(m):
        rows = np.flatnonzero(micro == mi)
        bins.append([[int(rows[i]) for i in bn] for bn in first_fit_decreasing(lengths[rows].tolist(), lp)])
    n = max(1, max(len(x) for x in bins))
    n = round_up(row_bucket(n), max(1, row_multiple))
    out_tokens = np.zeros((n * m, lp), np.int32)
    seg = np.zeros((n * m, lp), np.int32)
    pos = np.zeros((n * m, lp), np.int32)
    index = np.zeros(attn.shape, np.int32)
    for mi, rows_bins in enumerate(bins):
        for j, bn in enumerate(rows_bins):
            r, at = j * m + mi, 0
            for s, row in enumerate(bn):
                cols = np.flatnonzero(attn[row])
                k = len(cols)
                out_tokens[r, at : at + k] = tokens[row, cols]
                seg[r, at : at + k] = s + 1
                pos[r, at : at + k] = np.arange(k)
                index[row, cols] = j * lp + at + np.arange(k)
                at += k
    return dict(
        packed_tokens=out_tokens, packed_segment_ids=seg, packed_positions=pos, pack_index=index, pack_valid=attn.copy()
    )


def unpack(x, index, valid):
    """Packed per-token values ``x [N, L_pack]`` back to the padded layout ``[B, L]`` (0 where
    ``valid [B, L]`` is False) with ``pack_sequences``' ``index [B, L]``; differentiable (the
    gradient is scattered back to the packed slots)."""
    import jax.numpy as jnp

    return jnp.where(valid, x.reshape(-1)[index], jnp.zeros((), x.dtype))


def pack(x, index, valid, shape, fill=0.0):
    """The inverse of `unpack`: padded per-token values ``x [B, L]`` into the packed layout
    ``shape = [N, L_pack]`` (``fill`` where no valid token lands)."""
    import jax.numpy as jnp

    size = shape[0] * shape[1]
    flat = jnp.full((size,), fill, x.dtype)
    return flat.at[jnp.where(valid, index, size)].set(x, mode="drop").reshape(shape)
