"""Overlap reward scoring with rollout generation (``rollout.overlap_chunks``).

A step's questions are cut into ``C`` contiguous chunks. The calling thread generates chunk
``k + 1`` while a scoring thread decodes and scores chunk ``k``::

    caller:   gen 0 | gen 1 | gen 2 | gen 3 | wait
    scorer:           score 0 score 1 score 2 | score 3

Every chunk is generated with the same parameters (nothing stale: still on-policy); only the
host-side work moves to the other thread. JAX releases the GIL while the device (or XLA's
CPU threads) generates and the math verifier waits on its worker processes, so both make
progress at once. Of the scoring time ``R`` at most the last chunk's stays exposed: the step's
rollout + reward wall time goes from ``G + R`` to about ``G + R / C`` when scoring a chunk
takes no longer than generating one (smaller generation batches may cost some throughput).

`pipelined_rollouts` is the whole mechanism, with no model in it (unit-tested with fake
generate and score functions); `upt_jax.train.rollouts.rollouts` supplies the sampler and the scorer.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import time
from typing import Any, Callable, Sequence

from upt_jax.models.partition import batch_shards
from upt_jax.sampling.sampler import chunk_bounds

log = logging.getLogger(__name__)

__all__ = ["PipelineTiming", "chunk_bounds", "pipelined_rollouts", "overlap_settings"]


def overlap_settings(config, mesh, online: bool) -> tuple[int, Any, dict]:
    """``(chunks, executor, sampler_kw)`` of a run: ``rollout.overlap_chunks`` (1 offline and with
    a learned reward model), the scoring thread (None for one chunk) and the `Sampler`'s keyword
    arguments (``streams``; with chunks, ``batch_bucket``: one chunk per compiled batch).

    A learned reward model stays serial: it is a device program (launched from a second thread its
    order against the sampler's could differ between processes of a multi-host mesh: a collective
    deadlock) and ``reward.normalize = batch/running`` normalises over the whole step's scores."""
    chunks = int(config.rollout.get("overlap_chunks", 1))
    if chunks < 1:
        raise ValueError(f"config.rollout.overlap_chunks must be ≥ 1, got {chunks}")
    if chunks > 1 and online and config.reward.source == "model":
        log.warning(
            "rollout.overlap_chunks=%d ignored: the learned reward model (reward.source=model) "
            "scores after generation, serially",
            chunks,
        )
    if not online or config.reward.source == "model":
        chunks = 1
    streams = config.rollout.get("streams", "auto")  # a command-line override arrives as a string
    sampler_kw = {"streams": int(streams) if isinstance(streams, str) and streams.isdigit() else streams}
    if chunks == 1:
        return chunks, None, sampler_kw
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="upt_jax-reward")
    # one chunk per compiled batch (not padded up to the default bucket of 8), rounded up to the
    # rows the mesh splits prompts over (the sampler pads to a multiple of those)
    chunk = -(-config.train.questions_per_step // chunks)
    shards = batch_shards(mesh)
    padded = -(-chunk // shards) * shards
    sampler_kw["batch_bucket"] = padded * max(1, int(config.rollout.n))  # the bucket counts decoded rows
    if chunk % shards:
        log.warning(
            "rollout.overlap_chunks=%d: chunks of %d questions are padded to %d prompts "
            "(a multiple of the mesh's data×fsdp=%d)",
            chunks,
            chunk,
            padded,
            shards,
        )
    return chunks, executor, sampler_kw


@dataclasses.dataclass
class PipelineTiming:
    """Where the time of one `pipelined_rollouts` call went.

    Attributes:
      generate_s: Σ generation wall time (calling thread).
      score_s: Σ scoring wall time (scoring thread, or the caller when serial).
      overlap_s: the part of ``score_s`` that ran while a chunk was generating (hidden);
        ``generate_s + score_s − overlap_s`` ≈ the wall time of the call.
      events: ``(name, chunk, perf_counter time)`` with ``name`` in ``gen_start``, ``gen_end``,
        ``score_start``, ``score_end``, in the order they happened.
    """

    generate_s: float = 0.0
    score_s: float = 0.0
    overlap_s: float = 0.0
    events: list = dataclasses.field(default_factory=list)


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def _reraise(err: BaseException, k: int, n: int):
    err.add_note(
        f"(raised while scoring rollout chunk {k + 1} of {n} in the reward thread, rollout.overlap_chunks={n})"
    )
    raise err


def pipelined_rollouts(
    generate_fn: Callable[[int, Any], Any],
    score_fn: Callable[[int, Any, Any], Any],
    chunks: Sequence[Any],
    executor: concurrent.futures.Executor | None = None,
) -> tuple[list[tuple[Any, Any]], PipelineTiming]:
    """Generate chunk after chunk in this thread, scoring each on ``executor`` meanwhile.

    Args:
      generate_fn: ``(k, chunks[k]) → out``; always called in the calling thread, in order
        (device work stays in one thread: the same program order on every process).
      score_fn: ``(k, chunks[k], out) → scores``; called on ``executor`` (in the caller when
        ``executor`` is None or there is one chunk: strictly serial, as without overlap).
      chunks: anything describing the pieces, e.g. `chunk_bounds` output.
      executor: a 1-worker executor keeps scoring in chunk order and one thread at a time
        on the verifier (its worker pool is not thread-safe).
    Returns:
      ``[(out_k, scores_k)]`` in chunk order whatever finished first, and a `PipelineTiming`.
    Raises:
      whatever ``score_fn`` raised (same type, with a note naming the chunk), as soon as it is
      seen (no further chunk is generated); ``generate_fn`` errors as they are. Either way no
      scoring is left running when this returns or raises.
    """
    clock = time.perf_counter
    n = len(chunks)
    timing = PipelineTiming()
    events = timing.events  # list.append is atomic: both threads write here
    gen_iv: list[tuple[float, float]] = []
    score_iv: list[tuple[float, float] | None] = [None] * n

    def scored(k, chunk, out):
        t0 = clock()
        events.append(("score_start", k, t0))
        try:
            return score_fn(k, chunk, out)
        finally:
            t1 = clock()
            score_iv[k] = (t0, t1)
            events.append(("score_end", k, t1))

    def generated(k, chunk):
        t0 = clock()
        events.append(("gen_start", k, t0))
        out = generate_fn(k, chunk)
        t1 = clock()
        gen_iv.append((t0, t1))
        events.append(("gen_end", k, t1))
        return out

    results = []
    if executor is None or n == 1:
        for k, chunk in enumerate(chunks):
            out = generated(k, chunk)
            results.append((out, scored(k, chunk, out)))
    else:
        outs, futures = [], []
        try:
            for k, chunk in enumerate(chunks):
                for j, f in enumerate(futures):  # fail fast: do not generate past a failed score
                    if f.done() and f.exception() is not None:
                        _reraise(f.exception(), j, n)
                outs.append(generated(k, chunk))
                futures.append(executor.submit(scored, k, chunk, outs[-1]))
            for k, f in enumerate(futures):
                try:
                    results.append((outs[k], f.result()))
                except Exception as err:  # noqa: BLE001 (re-raised with the chunk named)
                    _reraise(err, k, n)
        finally:  # on any error: nothing keeps scoring behind the caller's back
            for f in futures:
                f.cancel()
            concurrent.futures.wait(futures)
    timing.generate_s = sum(b - a for a, b in gen_iv)
    timing.score_s = sum(b - a for a, b in (iv for iv in score_iv if iv is not None))
    timing.overlap_s = sum(_overlap(s, g) for s in score_iv if s is not None for g in gen_iv)
    return results, timing
