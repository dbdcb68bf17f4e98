"""Sampler: greedy = argmax of full forwards, log-probs = recomputed, distributions (chi-square),
no recompilation within a bucket, stop tokens, determinism, mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from upt_jax.models import init_model, make_mesh, preset, sequence_logprobs, shard_model
from upt_jax.sampling import Sampler, SamplingParams, process_logits

CFG = preset(
    "tiny", num_layers=2, vocab_size=96, hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2, head_dim=16
)
PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [3], [40, 41, 42, 43]]


@pytest.fixture(scope="module")
def model():
    return init_model(CFG, 0)


def _right_padded(seq, width=32):
    """Right padding does not change causal logits at real positions; one shape = one compile."""
    return jnp.asarray([list(seq) + [0] * (width - len(seq))])


def test_greedy_equals_repeated_full_forward_argmax(model):
    out = Sampler(model).generate(PROMPTS, jax.random.key(0), SamplingParams(max_new_tokens=12, greedy=True))
    forward = jax.jit(lambda t: model(t)[0])
    for i, prompt in enumerate(PROMPTS):
        seq = list(prompt)
        for _ in range(12):
            logits = forward(_right_padded(seq))
            seq.append(int(jnp.argmax(logits[0, len(seq) - 1])))
        assert out.tokens[i].tolist() == seq[len(prompt) :], i


def test_bf16_model_samples_on_cpu(model):
    """bf16 weights and compute, bf16 KV cache: prefill and decode run (XLA CPU's Eigen dot has no
    bf16 × bf16 → fp32 kernel; the attention scores upcast there), and the sampled tokens' log-probs
    match a bf16 forward recomputation to bf16 accuracy."""
    m16 = init_model(CFG.replace(dtype="bfloat16", param_dtype="bfloat16"), 0)
    out = Sampler(m16).generate(PROMPTS, jax.random.key(3), SamplingParams(max_new_tokens=8, n=2))
    assert out.tokens.shape == (2 * len(PROMPTS), 8) and np.isfinite(out.logprobs).all()
    recompute = jax.jit(lambda t: sequence_logprobs(m16, t))
    for i in range(len(out.lengths)):
        n = int(out.lengths[i])
        seq = PROMPTS[out.prompt_index[i]] + out.tokens[i, :n].tolist()
        lp = np.asarray(recompute(_right_padded(seq))[0, len(seq) - n : len(seq)])
        np.testing.assert_allclose(lp, out.logprobs[i, :n], atol=0.1)


def test_logprobs_equal_forward_recomputation(model):
    params = SamplingParams(max_new_tokens=20, temperature=0.8, top_k=30, top_p=0.9, n=3)
    out = Sampler(model).generate(PROMPTS, jax.random.key(1), params)
    assert out.tokens.shape == (len(PROMPTS) * 3, 20)
    worst = 0.0
    # the behaviour log-probs are the policy's at the sampling temperature (untruncated)
    recompute = jax.jit(lambda t: sequence_logprobs(model, t, temperature=params.temperature))
    for i in range(len(out.lengths)):
        n = int(out.lengths[i])
        seq = PROMPTS[out.prompt_index[i]] + out.tokens[i, :n].tolist()
        lp = np.asarray(recompute(_right_padded(seq))[0, len(seq) - n : len(seq)])
        worst = max(worst, float(np.abs(lp - out.logprobs[i, :n]).max()))
    assert worst < 1e-5
    # processing is on, so the sampling distribution's log-probs differ (truncation raises them)
    assert np.all(out.sampling_logprobs >= out.logprobs - 1e-5)
    assert np.any(np.abs(out.sampling_logprobs - out.logprobs) > 1e-3)


def _np_processed_probs(logits, temperature, top_k, top_p):
    """Independent numpy reading of temperature → top-k → top-p."""
    z = logits / temperature
    order = np.argsort(-z, kind="stable")
    keep = np.zeros_like(z, bool)
    keep[order[: top_k if top_k else len(z)]] = True
    z = np.where(keep, z, -np.inf)
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p < 1:
        cum = 0.0
        keep2 = np.zeros_like(keep)
        for j in np.argsort(-p, kind="stable"):
            if cum >= top_p:
                break
            keep2[j] = True
            cum += p[j]
        p = np.where(keep2, p, 0)
        p /= p.sum()
    return p


@pytest.mark.parametrize(
    "temperature,top_k,top_p", [(1.0, 0, 1.0), (0.6, 0, 1.0), (1.3, 5, 1.0), (1.0, 0, 0.7), (0.8, 6, 0.8)]
)
def test_sampled_distribution_chi_square(temperature, top_k, top_p):
    cfg = CFG.replace(vocab_size=12)
    m = init_model(cfg, 2)
    # scale the head so the next-token distribution is far from uniform
    if m.lm_head is None:
        m.embed_tokens.embedding.value = m.embed_tokens.embedding.value * 6
    else:
        m.lm_head.kernel.value = m.lm_head.kernel.value * 6
    prompt = [1, 2, 3]
    logits, _ = m(jnp.asarray([prompt]))
    expected = _np_processed_probs(np.asarray(logits[0, -1], np.float64), temperature, top_k, top_p)
    n = 4000
    params = SamplingParams(max_new_tokens=1, temperature=temperature, top_k=top_k, top_p=top_p, n=n)
    out = Sampler(m).generate([prompt], jax.random.key(7), params)
    counts = np.bincount(out.tokens[:, 0], minlength=12)
    support = expected > 0
    assert counts[~support].sum() == 0, "sampled a token outside the truncated support"
    assert support.sum() >= 3, f"test distribution too peaked: {expected}"
    exp_counts = expected[support] * n
    chi2, pval = stats.chisquare(counts[support], exp_counts)
    assert pval > 1e-3, (chi2, pval, counts, exp_counts)


def test_top_p_keeps_smallest_prefix():
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
    kept = np.isfinite(np.asarray(process_logits(logits, 1.0, 0, 0.75))) & (
        np.asarray(process_logits(logits, 1.0, 0, 0.75)) > -1e29
    )
    assert kept.tolist() == [[True, True, False, False]]
    kept = np.asarray(process_logits(logits, 1.0, 0, 0.8)) > -1e29
    assert kept.tolist() == [[True, True, False, False]]
    kept = np.asarray(process_logits(logits, 1.0, 0, 0.81)) > -1e29
    assert kept.tolist() == [[True, True, True, False]]


def _sorted_truncation(logits, top_k, top_p):
    """Textbook top-k then top-p by sorting (numpy, float64 cumulative mass): the kept mask."""
    x = np.asarray(logits, np.float64).copy()
    for row in x:
        if 0 < top_k < row.size:
            row[row < np.sort(row)[::-1][top_k - 1]] = -np.inf
        if top_p < 1.0:
            order = np.sort(row[np.isfinite(row)])[::-1]
            probs = np.exp(order - order[0])
            probs /= probs.sum()
            before = np.cumsum(probs) - probs  # mass strictly above each entry in sorted order
            row[row < order[before < top_p].min()] = -np.inf
    return np.isfinite(x)


def test_truncation_thresholds_equal_sorting():
    """top-k / top-p keep exactly what sorting keeps: ties (also −0 vs +0) at the threshold kept,
    values near ±3e38, vocabularies of 5 to 4096, top-k and top-p combined. The thresholds come
    from a 32-step descent over order keys, no sort."""
    rng = np.random.RandomState(0)
    for trial in range(60):
        v = int(rng.choice([5, 17, 100, 4096]))
        x = (rng.randn(4, v) * rng.choice([0.1, 1.0, 5.0])).astype(np.float32)
        if trial % 3 == 0:
            x = np.round(x, 1).astype(np.float32)  # many ties, −0.0 and +0.0 among them
        if trial % 5 == 0:
            x[:, :2] = -3e38
        top_k, top_p = int(rng.choice([0, 1, 2, 10, 50])), float(rng.choice([1.0, 0.3, 0.5, 0.9]))
        kept = np.asarray(process_logits(jnp.asarray(x), 1.0, top_k, top_p)) == x  # removed → −1e30
        np.testing.assert_array_equal(kept, _sorted_truncation(x, top_k, top_p), err_msg=f"{trial} {top_k} {top_p}")
        assert kept.any(axis=-1).all()


def test_no_recompile_within_bucket(model):
    compiles = []
    listener = lambda event, duration, **kw: compiles.append(event) if "backend_compile" in event else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        s = Sampler(model, len_buckets=(16, 32))
        a = s.generate(PROMPTS, jax.random.key(0), SamplingParams(max_new_tokens=10))
        assert s.num_compiles == 1 and a.compile_s > 0
        before = len(compiles)
        # different prompts, lengths and max_new_tokens, same buckets
        b = s.generate([[1, 2], [3, 4, 5, 6, 7, 8, 9, 10, 11]], jax.random.key(1), SamplingParams(max_new_tokens=14))
        assert s.num_compiles == 1 and b.compile_s == 0.0
        assert len(compiles) == before, "XLA compiled again for a bucketed shape"
        assert b.tokens.shape == (2, 14)
        s.generate(PROMPTS, jax.random.key(0), SamplingParams(max_new_tokens=20))  # next bucket
        assert s.num_compiles == 2
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def test_stop_tokens_and_padding(model):
    # find what greedy decoding emits, then declare its 3rd token a stop token
    s = Sampler(model, pad_id=0)
    free = s.generate(PROMPTS[:1], jax.random.key(0), SamplingParams(max_new_tokens=8, greedy=True))
    stop = int(free.tokens[0, 2])
    first = free.tokens[0].tolist().index(stop)
    out = s.generate(
        PROMPTS[:1], jax.random.key(0), SamplingParams(max_new_tokens=8, greedy=True, stop_token_ids=(stop,))
    )
    assert out.finished[0] and out.lengths[0] == first + 1
    assert out.tokens[0, first] == stop and np.all(out.tokens[0, first + 1 :] == 0)
    assert np.all(out.logprobs[0, first + 1 :] == 0)


def test_deterministic_for_a_key(model):
    s = Sampler(model)
    p = SamplingParams(max_new_tokens=8, n=2)
    a = s.generate(PROMPTS, jax.random.key(3), p)
    b = s.generate(PROMPTS, jax.random.key(3), p)
    c = s.generate(PROMPTS, jax.random.key(4), p)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)


def test_sampling_on_a_mesh_matches_single_device(model):
    p = SamplingParams(max_new_tokens=6, greedy=True, n=2)
    single = Sampler(model).generate(PROMPTS, jax.random.key(0), p)
    sharded_model = shard_model(init_model(CFG, 0), make_mesh(data=2, fsdp=2, tensor=2))
    mesh_out = Sampler(sharded_model, mesh=make_mesh(data=2, fsdp=2, tensor=2)).generate(PROMPTS, jax.random.key(0), p)
    np.testing.assert_array_equal(single.tokens, mesh_out.tokens)
    np.testing.assert_allclose(single.logprobs, mesh_out.logprobs, atol=1e-5)


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="empty prompt"):
        Sampler(model).generate([[1], []], jax.random.key(0), SamplingParams())
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)


def test_rows_keyed_by_global_index_independent_of_batching(model):
    """Sample j of prompt i draws from fold_in(key, (offset + i)·n + j) only: chunks of the prompt
    list (with their offsets) and another batch bucket give the tokens of one call; the offset
    matters."""
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_k=40, n=2)
    key = jax.random.key(11)
    whole = Sampler(model).generate(PROMPTS, key, params)
    parts = [
        Sampler(model, batch_bucket=1).generate(PROMPTS[a:b], key, params, prompt_offset=a) for a, b in ((0, 1), (1, 4))
    ]
    np.testing.assert_array_equal(np.concatenate([p.tokens for p in parts]), whole.tokens)
    np.testing.assert_allclose(np.concatenate([p.logprobs for p in parts]), whole.logprobs, atol=1e-5)
    shifted = Sampler(model).generate(PROMPTS[1:], key, params)  # offset 0: other draws
    assert not np.array_equal(shifted.tokens, whole.tokens[2:])


def test_streams_give_the_one_stream_output(model):
    """Row chunks decoded concurrently in threads (``streams``) return exactly one stream's rows:
    even and uneven chunks (20 prompts, bucket 8: 16 + 4, 8 + 8 + 4), n > 1, mixed prompt lengths, a stop
    token, truncation; compile time reported once per executable."""
    rng = np.random.RandomState(0)
    prompts = [rng.randint(1, CFG.vocab_size, rng.randint(1, 9)).tolist() for _ in range(20)]
    params = SamplingParams(max_new_tokens=9, temperature=0.8, top_p=0.9, n=2, stop_token_ids=(7,))
    key = jax.random.key(5)
    one = Sampler(model, streams=1).generate(prompts, key, params)
    # n = 2 with a bucket of 8 rows: prompts come in multiples of 4
    for streams, chunks, executables in ((2, [(0, 12), (12, 20)], 2), (3, [(0, 8), (8, 16), (16, 20)], 2)):
        s = Sampler(model, streams=streams)
        assert s.stream_chunks(20, 4) == chunks
        out = s.generate(prompts, key, params)
        assert s.num_compiles == executables and out.compile_s > 0  # one per row bucket
        for f in ("tokens", "lengths", "finished", "prompt_index"):
            np.testing.assert_array_equal(getattr(out, f), getattr(one, f), err_msg=f)
        np.testing.assert_allclose(out.logprobs, one.logprobs, atol=1e-5)
        np.testing.assert_allclose(out.sampling_logprobs, one.sampling_logprobs, atol=1e-5)
    assert one.finished.any() and not one.finished.all()


def test_stream_chunks_never_add_padded_rows(model):
    s = Sampler(model, streams=2)
    assert s.stream_chunks(32, 8) == [(0, 16), (16, 32)]
    assert s.stream_chunks(12, 8) == [(0, 8), (8, 12)]  # 8 + 8 padded rows, as one call's 16
    assert s.stream_chunks(8, 8) == [(0, 8)]  # halves would pad to 16 rows
    assert s.stream_chunks(3, 1) == [(0, 2), (2, 3)]
    assert Sampler(model, streams=1).stream_chunks(32, 8) == [(0, 32)]
    assert Sampler(model, streams=4).stream_chunks(32, 8) == [(0, 8), (8, 16), (16, 24), (24, 32)]


def test_auto_streams_rule(model, monkeypatch):
    """``streams="auto"``: 2 on a multi-core CPU host for a small single-device model, else 1."""
    import upt_jax.sampling.sampler as sampler_mod

    monkeypatch.setattr(sampler_mod, "_host_cores", lambda: 2)
    assert Sampler(model).streams == 2
    assert Sampler(model, mesh=make_mesh(data=2, fsdp=2, tensor=2)).streams == 1
    monkeypatch.setattr(sampler_mod, "AUTO_STREAMS_MAX_PARAM_BYTES", 1000)  # the model is larger
    assert Sampler(model).streams == 1
    monkeypatch.undo()
    monkeypatch.setattr(sampler_mod, "_host_cores", lambda: 1)
    assert Sampler(model).streams == 1
    with pytest.raises(ValueError, match="streams"):
        Sampler(model, streams=0)


def test_n_samples_fill_the_row_bucket_without_filler_prompts(model):
    """The batch bucket counts decoded rows (prompts × n): 4 prompts × 8 samples decode 32 rows
    in one executable of 4 prompts (not 8 prompts' 64 rows, half of them filler), the same tokens
    as prompts padded to a bucket of 8."""
    params = SamplingParams(max_new_tokens=6, temperature=1.0, n=8)
    key = jax.random.key(2)
    s = Sampler(model, batch_bucket=8, streams=1)
    out = s.generate(PROMPTS, key, params)
    assert [k[0] for k in s.compiled_shapes()] == [4]  # prompts in the compiled batch
    assert out.tokens.shape == (32, 6)
    three = Sampler(model, batch_bucket=8, streams=1)
    three.generate(PROMPTS[:3], key, params)
    assert [k[0] for k in three.compiled_shapes()] == [3]  # 3 × 8 = 24 rows: a multiple of 8 already
    odd = Sampler(model, batch_bucket=8, streams=1)
    odd.generate(PROMPTS[:3], key, SamplingParams(max_new_tokens=6, n=2))
    assert [k[0] for k in odd.compiled_shapes()] == [4]  # 3 × 2 rows round up to 4 prompts × 2 = 8 rows
    one = Sampler(model, batch_bucket=64, streams=1).generate(PROMPTS, key, params)  # 8 prompts: filler
    np.testing.assert_array_equal(out.tokens, one.tokens)
    np.testing.assert_allclose(out.logprobs, one.logprobs, atol=1e-5)


def test_prompt_floor_shares_one_executable(model):
    """``min_prompt_len``: prompts of 3 and 20 tokens under a floor of 20 use one executable (the
    20-token bucket), and a prompt's tokens are the ones it gets in its own smaller bucket."""
    params = SamplingParams(max_new_tokens=5, temperature=1.0)
    key = jax.random.key(4)
    s = Sampler(model, len_buckets=(8, 16, 24), streams=1)
    short = s.generate(PROMPTS[:1], key, params, min_prompt_len=20)
    s.generate([list(range(1, 21))], key, params, min_prompt_len=20)
    assert s.num_compiles == 1 and [k[1] for k in s.compiled_shapes()] == [24]
    own = Sampler(model, len_buckets=(8, 16, 24), streams=1).generate(PROMPTS[:1], key, params)
    np.testing.assert_array_equal(short.tokens, own.tokens)
    np.testing.assert_allclose(short.logprobs, own.logprobs, atol=1e-5)
