"""Jit-compiled batched generation with the KV cache.

``Sampler.generate`` takes a list of prompts (token-id lists of different lengths), left-pads
them into a bucketed ``[B, P]`` batch, prefills the cache once per prompt, repeats the
prefilled cache ``n`` times (one prefill serves all ``n`` samples of a prompt) and runs a
``lax.while_loop`` decode (no Python per token) until every row hits a stop token or
``max_new_tokens``.

Returned per sampled token:
  * ``logprobs``: log π_θ^τ(o_t | ·) = log softmax(z_t / τ)[o_t], the policy at the sampling
    temperature τ without truncation (τ = 1 for greedy decoding): the behaviour log-probs that
    importance ratios need, equal to what a forward pass at temperature τ recomputes
    (``sequence_logprobs(..., temperature=τ)``, see `policy_temperature`). As in verl and TRL,
    the trainer computes log π_θ, ratios and entropies at the same τ, so the step-0 ratio is 1
    and the gradient is the gradient of the policy the rollouts were drawn from;
  * ``sampling_logprobs``: log-prob under the processed distribution the token was drawn
    from (temperature, top-k, top-p), which differs from ``logprobs`` whenever truncation is on;
  * ``thresholds``: the kept set of that distribution as one number per token, a threshold on
    the tempered logits ``z / τ`` (see `kept_set_threshold`): a trainer that renormalises its
    π_θ^τ over ``{v : z_v / τ ≥ threshold}`` (``sequence_logprobs(..., kept_threshold=)``)
    recomputes ``sampling_logprobs`` exactly, so the policy it trains is the one sampled.

Shapes are rounded up to buckets (batch, prompt length, generation length) and compiled
executables are cached per bucket, so repeated calls do not recompile; compile time is
reported apart from run time.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from upt_jax.models.partition import batch_shards
from upt_jax.models.rope import positions_from_mask, rope_from_table, rope_table
from upt_jax.models.transformer import KVCache
from upt_jax.sampling.params import (
    DEFAULT_LEN_BUCKETS,
    SampleOutput,
    SamplingParams,  # noqa: F401 (public here too)
    chunk_bounds,
    first_argmax,
    policy_temperature,
    round_up,
    sample_from_weights,
    sample_inverse_cdf,
)
from upt_jax.sampling.truncation import kept_set_threshold, process_logits  # noqa: F401 (public here too)


def _to_host(x) -> np.ndarray:
    """Global value of ``x`` as numpy, gathered from every process when the mesh spans several
    (an array sharded over other processes' devices is not fully addressable)."""
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


# ``streams="auto"``: the parameter size up to which two streams pay on a CPU host. Both streams
# read every weight at every step: small models stay in the last-level cache (tiny, 24 MB:
# 1.2-1.26x tokens/s with 2 streams), large ones double the DRAM traffic (small, 250 MB: 0.9x).
AUTO_STREAMS_MAX_PARAM_BYTES = 64 << 20


def _host_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Sampler:
    """Batched generation for one model; compiled executables cached per shape bucket.

    Args:
      model: a ``Transformer`` (its current parameters are read at every ``generate``; pass
        ``state=`` to sample with other parameters of the same graph).
      pad_id: id written after a row ends and used for left padding.
      len_buckets: prompt and generation length buckets.
      batch_bucket: the number of decoded rows (prompts × n) is rounded up to a multiple of
        this, by padding the prompts (to a multiple of ``batch_bucket / gcd(batch_bucket, n)``).
      mesh: if given, the batch is sharded over ``('data', 'fsdp')``.
      streams: decode the prompts as this many row chunks at once, each in its own thread (same
        output: every row's draws depend only on its global index). XLA CPU runs a small model's
        decode ops one after another, most too small to split over cores, so one stream leaves
        cores idle. ``"auto"``: 2 on a CPU backend with ≥ 2 cores, no multi-device mesh and
        parameters ≤ ``AUTO_STREAMS_MAX_PARAM_BYTES``; else 1. A call is split only when its
        chunks need no more padded rows than one batch (each chunk a multiple of the batch
        bucket).
    """

    def __init__(
        self,
        model,
        *,
        pad_id: int = 0,
        len_buckets: Sequence[int] = DEFAULT_LEN_BUCKETS,
        batch_bucket: int = 8,
        mesh=None,
        cache_dtype=None,
        streams: int | str = "auto",
    ):
        self.graphdef, self.state = nnx.split(model)
        self.cfg = model.cfg
        self.pad_id = int(pad_id)
        self.len_buckets = tuple(len_buckets)
        self.batch_bucket = batch_bucket
        self.mesh = mesh
        self.cache_dtype = cache_dtype
        self._compiled: dict = {}
        self._compile_lock = threading.Lock()
        self.num_compiles = 0
        if streams != "auto" and not (isinstance(streams, int) and streams >= 1):
            raise ValueError(f"streams must be 'auto' or an int ≥ 1, got {streams!r}")
        self.streams = self._auto_streams() if streams == "auto" else streams

    def _auto_streams(self) -> int:
        param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(self.state))
        single_device = self.mesh is None or self.mesh.devices.size == 1
        cpu = jax.default_backend() == "cpu"
        return (
            2 if (cpu and single_device and _host_cores() >= 2 and param_bytes <= AUTO_STREAMS_MAX_PARAM_BYTES) else 1
        )

    # ------------------------------------------------------------------ compiled core
    def _build(self, params: SamplingParams, b: int, p: int, l: int):
        graphdef, cfg, pad_id = self.graphdef, self.cfg, self.pad_id
        n = params.n
        stop_ids = jnp.asarray(params.stop_token_ids or (-1,), jnp.int32)
        cache_dtype = self.cache_dtype
        # top-k / top-p: the token is drawn from a truncated distribution; temperature alone
        # samples from the policy at τ itself (the weights of its log-sum-exp pass)
        truncating = params.top_k > 0 or params.top_p < 1.0
        tau = policy_temperature(params)

        def run(state, prompt, prompt_mask, max_new, key, row_offset):
            model = nnx.merge(graphdef, state)
            # the prefill reads the prompt's slots only (the cache's index is known: 0)
            cache = KVCache.init(cfg, b, p + l, cache_dtype, static_index=True)
            positions = positions_from_mask(prompt_mask)
            hidden, cache = model.hidden_states(prompt, attention_mask=prompt_mask, positions=positions, cache=cache)
            cache = cache.replace(static_index=None)  # the decode loop's carry: the index moves
            kernel = model.lm_head_kernel()
            logits = jnp.einsum(
                "bd,dv->bv", hidden[:, -1], kernel.astype(hidden.dtype), preferred_element_type=jnp.float32
            )
            next_pos = jnp.sum(prompt_mask, axis=-1).astype(jnp.int32)
            # one prefill serves the n samples of each prompt
            rep = lambda x: jnp.repeat(x, n, axis=0)
            cache = jax.tree.map(lambda x: rep(x) if x.ndim else x, cache)
            logits, next_pos = rep(logits), rep(next_pos)
            bn = b * n
            # row r's draws come from fold_in(key, row_offset + r): independent of the batch it
            # is sampled in (bucket padding, chunks of a prompt list, the mesh)
            # (all l draws up front: per-step RNG inside the loop cost ~2 % of a decode step)
            row_keys = jax.vmap(lambda r: jax.random.fold_in(key, r))(row_offset + jnp.arange(bn))
            uniforms = jax.vmap(
                lambda k: jax.vmap(lambda s: jax.random.uniform(jax.random.fold_in(k, s)))(jnp.arange(l))
            )(row_keys)  # [bn, l]
            # cos/sin of every position once; each step gathers its rows (computed from the
            # positions inside the loop, XLA re-evaluates them in every layer: ~7 % of a tiny step)
            table = rope_table(model.layers[0].self_attn.inv_freq, p + l)
            carry = dict(
                step=jnp.zeros((), jnp.int32),
                cache=cache,
                logits=logits,
                pos=next_pos,
                tokens=jnp.full((bn, l), pad_id, jnp.int32),
                logp=jnp.zeros((bn, l), jnp.float32),
                slogp=jnp.zeros((bn, l), jnp.float32),
                thr=jnp.full((bn, l), -jnp.inf, jnp.float32),
                done=jnp.zeros((bn,), bool),
                lengths=jnp.zeros((bn,), jnp.int32),
            )

            def cond(c):
                return (c["step"] < max_new) & ~jnp.all(c["done"])

            def body(c):
                logits = c["logits"]
                u = jax.lax.dynamic_slice_in_dim(uniforms, c["step"], 1, axis=1)[:, 0]
                take = lambda a, t: jnp.take_along_axis(a, t[:, None], axis=-1)[:, 0]
                # the policy's logits at the sampling temperature τ (the policy the trainer's
                # log-probs, ratios and entropies are computed at)
                scaled = logits / tau if tau != 1.0 else logits
                # one exp pass over V: the policy log-prob's normaliser, and (no truncation) the
                # weights the token is drawn from
                top = jnp.max(scaled, axis=-1, keepdims=True)
                weights = jnp.exp(scaled - top)
                lse = top[:, 0] + jnp.log(jnp.sum(weights, axis=-1))
                if params.is_greedy:
                    tok = first_argmax(logits)
                elif truncating:
                    proc = process_logits(scaled, 1.0, params.top_k, params.top_p)
                    tok = sample_inverse_cdf(None, proc, u=u)
                else:
                    tok = sample_from_weights(None, weights, u=u)
                model_lp = take(scaled, tok) - lse
                cut = truncating and not params.is_greedy
                samp_lp = take(proc, tok) - jax.nn.logsumexp(proc, axis=-1) if cut else model_lp
                alive = ~c["done"]
                tok = jnp.where(alive, tok, pad_id)
                lp = jnp.where(alive, model_lp, 0.0)
                slp = jnp.where(alive, samp_lp, 0.0)
                s = c["step"]
                tokens = jax.lax.dynamic_update_slice(c["tokens"], tok[:, None], (0, s))
                logp = jax.lax.dynamic_update_slice(c["logp"], lp[:, None], (0, s))
                slogp = jax.lax.dynamic_update_slice(c["slogp"], slp[:, None], (0, s))
                thr = c["thr"]
                if cut:
                    th = jnp.where(alive, kept_set_threshold(scaled, proc), -jnp.inf)
                    thr = jax.lax.dynamic_update_slice(thr, th[:, None], (0, s))
                lengths = c["lengths"] + alive.astype(jnp.int32)
                done = c["done"] | (alive & jnp.any(tok[:, None] == stop_ids[None, :], axis=-1))
                m = nnx.merge(graphdef, state)
                hidden, cache = m.hidden_states(
                    tok[:, None],
                    attention_mask=alive[:, None].astype(jnp.int32),
                    positions=c["pos"][:, None],
                    cache=c["cache"],
                    rope=rope_from_table(table, c["pos"][:, None]),
                )
                logits = jnp.einsum(
                    "bd,dv->bv",
                    hidden[:, -1],
                    m.lm_head_kernel().astype(hidden.dtype),
                    preferred_element_type=jnp.float32,
                )
                return dict(
                    step=s + 1,
                    cache=cache,
                    logits=logits,
                    pos=c["pos"] + alive.astype(jnp.int32),
                    tokens=tokens,
                    logp=logp,
                    slogp=slogp,
                    thr=thr,
                    done=done,
                    lengths=lengths,
                )

            out = jax.lax.while_loop(cond, body, carry)
            return out["tokens"], out["logp"], out["slogp"], out["thr"], out["lengths"], out["done"]

        return jax.jit(run)

    def compiled_shapes(self) -> list[tuple[int, int, int]]:
        """``(prompts, prompt length, length bucket)`` of each executable compiled so far, in order."""
        with self._compile_lock:
            return [(k[1], k[2], k[3]) for k in self._compiled]

    def program(self, params: SamplingParams, b: int, p: int, l: int):
        """The jitted sampling program for ``b`` prompts of ``p`` tokens and the length bucket
        ``l`` (what `generate` compiles), for ahead-of-time ``.lower(*args).compile()``."""
        return self._build(params, b, p, l)

    def _executable(self, params, b, p, l, args):
        # max_new_tokens is a runtime argument: only its bucket ``l`` selects the executable
        params = dataclasses.replace(params, max_new_tokens=l)
        leaves = tuple((x.shape, str(x.dtype), str(getattr(x, "sharding", None))) for x in jax.tree.leaves(args[0]))
        key = (params, b, p, l, leaves)
        with self._compile_lock:
            if key not in self._compiled:
                t0 = time.perf_counter()
                self._compiled[key] = self._build(params, b, p, l).lower(*args).compile()
                self.num_compiles += 1
                return self._compiled[key], time.perf_counter() - t0
            return self._compiled[key], 0.0

    # ------------------------------------------------------------------ public
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        key: jax.Array,
        params: SamplingParams,
        *,
        state=None,
        prompt_offset: int = 0,
        min_prompt_len: int = 0,
    ) -> SampleOutput:
        """Sample ``params.n`` continuations of every prompt.

        Args:
          prompts: token-id lists (lengths may differ; none empty).
          key: PRNG key; the output is a deterministic function of (key, prompts, params, state).
          params: ``SamplingParams``.
          state: NNX parameter state to use instead of the model's own.
          prompt_offset: the index of ``prompts[0]`` in a longer list. Sample ``j`` of prompt
            ``i`` draws from ``fold_in(key, (prompt_offset + i) · n + j)`` alone, so its tokens
            do not depend on the other prompts in the call, the batch bucket or the mesh: a
            list generated in chunks (each with its offset) gives what one call gives.
          min_prompt_len: a floor of the prompt bucket (the longest prompt's, by default): calls
            that pass the same floor share one compiled executable while their prompts fit it.
        Returns:
          a ``SampleOutput`` with ``len(prompts) · n`` rows, prompt-major (the n samples of
          prompt i are rows ``i·n .. i·n + n − 1``).
        """
        if not len(prompts):
            raise ValueError("no prompts")
        if any(len(q) == 0 for q in prompts):
            raise ValueError("empty prompt: every prompt needs at least one token")
        state = self.state if state is None else state
        num = len(prompts)
        # prompts per compiled batch: a multiple of the mesh's row shards, and enough that the
        # decoded rows (prompts × n) fill the batch bucket: with n = 8 and a bucket of 8 prompts,
        # 4 prompts decode 32 rows, not 8 prompts' 64 rows of which half are filler
        unit = int(np.lcm(batch_shards(self.mesh), self.batch_bucket // np.gcd(self.batch_bucket, params.n)))
        p = round_up(max(min_prompt_len, max(len(q) for q in prompts)), self.len_buckets)  # one for all chunks
        l = round_up(params.max_new_tokens, self.len_buckets)
        chunks = self.stream_chunks(num, unit)
        exes, argss, compile_ss = zip(
            *(self._prepare(prompts[a:z], unit, p, l, params, state, key, prompt_offset + a) for a, z in chunks)
        )
        run = lambda exe, args: jax.block_until_ready(exe(*args))
        t0 = time.perf_counter()
        if len(chunks) == 1:
            outs = [run(exes[0], argss[0])]
        else:  # XLA CPU executes a call on the calling thread: one thread per stream
            with ThreadPoolExecutor(len(chunks), thread_name_prefix="upt-sampler") as pool:
                outs = list(pool.map(run, exes, argss))
        run_s = time.perf_counter() - t0
        cut = params.max_new_tokens
        parts = []
        for (a, z), out in zip(chunks, outs):
            keep = (z - a) * params.n
            parts.append([_to_host(x)[:keep] for x in out])
        toks, logp, slogp, thr, lengths, done = (np.concatenate(xs) for xs in zip(*parts))
        return SampleOutput(
            tokens=toks[:, :cut],
            logprobs=logp[:, :cut],
            sampling_logprobs=slogp[:, :cut],
            lengths=lengths,
            finished=done,
            prompt_index=np.repeat(np.arange(num), params.n),
            compile_s=sum(compile_ss),
            run_s=run_s,
            thresholds=thr[:, :cut],
        )

    def stream_chunks(self, num: int, unit: int) -> list[tuple[int, int]]:
        """``[start, stop)`` prompt ranges, one per stream: ``self.streams`` chunks of a multiple
        of ``unit`` prompts (the last takes the rest), or the whole list when splitting would
        add padded rows or leave a single chunk."""
        chunks = chunk_bounds(num, self.streams, unit)
        if len(chunks) < 2 or sum(round_up(z - a, unit) for a, z in chunks) > round_up(num, unit):
            return [(0, num)]
        return chunks

    def _prepare(self, prompts, unit: int, p: int, l: int, params: SamplingParams, state, key, prompt_offset: int):
        """Left-pad ``prompts`` into a ``[b, p]`` batch (``b`` a multiple of ``unit``), place it,
        and fetch (compiling once per bucket) the executable: ``(executable, args, compile_s)``."""
        num = len(prompts)
        b = round_up(num, unit)
        tokens = np.full((b, p), self.pad_id, np.int32)
        mask = np.zeros((b, p), np.int32)
        for i, q in enumerate(prompts):
            tokens[i, p - len(q) :] = q
            mask[i, p - len(q) :] = 1
        tokens[num:, -1], mask[num:, -1] = self.pad_id, 1  # filler rows: one pad token
        if self.mesh is not None:
            from upt_jax.models.partition import batch_sharding

            # every process holds the same global batch and hands over its devices' rows
            # (works when the mesh spans several processes: no cross-process equality check)
            put = lambda x: jax.make_array_from_callback(x.shape, batch_sharding(self.mesh), lambda i: x[i])
            tok_j, mask_j = put(tokens), put(mask)
        else:
            tok_j, mask_j = jnp.asarray(tokens), jnp.asarray(mask)
        args = (
            state,
            tok_j,
            mask_j,
            jnp.asarray(params.max_new_tokens, jnp.int32),
            key,
            jnp.asarray(prompt_offset * params.n, jnp.int32),
        )
        exe, compile_s = self._executable(params, b, p, l, args)
        return exe, args, compile_s
