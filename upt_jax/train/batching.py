"""Packing prompts and responses into bucketed token batches for the update step.

A row is ``prompt ⧺ response``: the prompt is left-padded into ``P`` columns and the response
right-padded into ``R``, so every response starts at column ``P`` whatever its prompt's length
(and per-token arrays such as behaviour log-probs line up with it). ``mask`` is 1 on the
response tokens trained on. ``P`` and ``R`` are rounded up to buckets so that the update
step compiles once per bucket.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from upt_jax.sampling.sampler import DEFAULT_LEN_BUCKETS, round_up

LEN_BUCKETS = DEFAULT_LEN_BUCKETS  # half-octave: a 332-token response pads to 384, not 512


def pack_rows(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], *, pad_id: int,
              prompt_len: int | None = None, response_len: int | None = None,
              buckets: Sequence[int] = LEN_BUCKETS,
              response_values: dict[str, Sequence[np.ndarray]] | None = None) -> dict[str, np.ndarray]:
    """Rows ``prompt_i ⧺ response_i`` → ``tokens, attention_mask, mask [B, P + R]``.

    Args:
      prompts, responses: token-id lists (a response may be empty: its row trains on nothing).
      pad_id: padding id.
      prompt_len, response_len: ``P``, ``R`` (default: the longest, rounded up to a bucket).
        Longer prompts keep their last ``P`` tokens; longer responses are truncated to ``R``.
      response_values: per-token arrays aligned with each response (e.g. ``old_logp``),
        placed at the response's columns (0 elsewhere).
    Returns:
      dict of numpy arrays: ``tokens`` int32, ``attention_mask`` int32, ``mask`` float32,
      ``truncated`` bool ``[B]`` (response cut to ``R``), and each ``response_values`` key
      float32 ``[B, P + R]``.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    p = prompt_len or round_up(max(len(x) for x in prompts), buckets)
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
        tokens[i, p - len(q):p] = q
        attn[i, p - len(q):p] = 1
        tokens[i, p:p + len(a)] = a
        attn[i, p:p + len(a)] = 1
        mask[i, p:p + len(a)] = 1
        for k, v in (response_values or {}).items():
            vi = np.asarray(v[i], np.float32)[:len(a)]
            values[k][i, p:p + len(vi)] = vi
    return dict(tokens=tokens, attention_mask=attn, mask=mask, truncated=truncated, **values)
