"""Fewer distinct shapes in a run, so that the sampler and the update step compile once.

Rows are ``prompt ⧺ response`` padded to buckets (`upt_jax.train.batching.pack_rows`), and the
sampler pads prompts to a bucket too: left alone, a step whose longest prompt lands in a new
bucket compiles the sampler, the update step and the reference pass again mid-run (a tiny model:
seconds each). An online run instead pads prompts (sampler and update) to at least the bucket of
the longest prompt among up to ``SCAN`` records spread over the training set (read once, at start).
The floor depends only on the records and the config, so a resumed run pads as the uninterrupted
one did; a prompt longer than every scanned one still gets its own (larger) bucket.

Responses keep each step's own bucket: padding them to ``rollout.max_new_tokens`` measured slower
(the shipped ``arith_hint`` base, ``max_new_tokens=192``, responses of ~90 tokens: the update took
2.9 s a step at 192 against 1.8 s at the step's own bucket, which recompiled once in 12 steps).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from upt_jax.sampling.sampler import DEFAULT_LEN_BUCKETS, round_up

SCAN = 512  # records whose prompts set the floor (evenly spaced over the set: every tier is seen)


def scan_indices(num: int, scan: int = SCAN) -> np.ndarray:
    """Up to ``scan`` distinct record indices evenly spaced over ``range(num)`` (all when fewer)."""
    if num <= scan:
        return np.arange(num)
    return np.unique(np.linspace(0, num - 1, scan).round().astype(int))


def prompt_floor(
    records: Sequence[dict],
    prompt_ids: Callable[[dict], list[int]],
    *,
    scan: int = SCAN,
    buckets: Sequence[int] = DEFAULT_LEN_BUCKETS,
) -> int:
    """The bucket of the longest prompt among the scanned ``records`` (``prompt_ids(record)``: its
    token ids)."""
    longest = max((len(prompt_ids(records[int(i)])) for i in scan_indices(len(records), scan)), default=1)
    return round_up(max(1, longest), buckets)
