"""Reward scoring overlapped with rollout generation (``rollout.overlap_chunks``, issue #8).

The pipeline (`pipelined_rollouts`) with fake generate/score functions: overlap is shown with
events (chunk 1's generation cannot finish until chunk 0's scoring has started), never with
wall-clock thresholds. Then the trainer: C = 2 against C = 1, errors, close(), a short run.
"""

import concurrent.futures
import threading
import time

import jax
import numpy as np
import pytest

from experiments import grpo
from upt_jax.train.overlap import chunk_bounds, pipelined_rollouts
from upt_jax.train.trainer import Trainer
from tests.train.test_trainer import shrink

WAIT = 30.0  # generous: only reached when the pipeline is broken (then the test fails, not hangs)


class _Recording(concurrent.futures.ThreadPoolExecutor):
    """A thread pool that keeps its futures (to wait on a given chunk's score in a test)."""

    def __init__(self, workers=1):
        super().__init__(max_workers=workers)
        self.futures = []

    def submit(self, fn, /, *args, **kwargs):
        f = super().submit(fn, *args, **kwargs)
        self.futures.append(f)
        return f


def test_chunk_bounds():
    assert chunk_bounds(8, 1) == [(0, 8)]
    assert chunk_bounds(8, 2) == [(0, 4), (4, 8)]
    assert chunk_bounds(8, 3) == [(0, 3), (3, 6), (6, 8)]
    assert chunk_bounds(2, 4) == [(0, 1), (1, 2)]  # never an empty chunk
    for num in range(1, 20):
        for c in range(1, 6):
            b = chunk_bounds(num, c)
            assert b[0][0] == 0 and b[-1][1] == num and all(x[1] == y[0] for x, y in zip(b, b[1:]))
            assert len({hi - lo for lo, hi in b[:-1]}) <= 1 and all(hi > lo for lo, hi in b)
    with pytest.raises(ValueError):
        chunk_bounds(4, 0)


def test_scoring_of_chunk_k_runs_while_chunk_k_plus_1_generates():
    started = [threading.Event() for _ in range(3)]

    def generate(k, chunk):
        if k > 0:  # cannot finish unless chunk k−1 is being scored meanwhile
            assert started[k - 1].wait(WAIT), f"scoring of chunk {k - 1} never started during generation {k}"
        return [x * 10 for x in chunk]

    def score(k, chunk, out):
        started[k].set()
        return [x + 1 for x in out]

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        results, t = pipelined_rollouts(generate, score, [[0, 1], [2, 3], [4]], ex)
    assert results == [([0, 10], [1, 11]), ([20, 30], [21, 31]), ([40], [41])]
    at = {(name, k): time for name, k, time in t.events}
    for k in range(2):
        assert at[("score_start", k)] < at[("gen_end", k + 1)]
        assert at[("gen_end", k)] <= at[("score_start", k)]  # a chunk is scored after it exists
    assert t.overlap_s > 0 and t.overlap_s <= t.score_s


def test_groups_come_back_in_chunk_order_whatever_finishes_first():
    release = threading.Event()

    def score(k, chunk, out):
        if k == 0:  # chunk 0 finishes last: it waits until chunk 2 has been scored
            assert release.wait(WAIT)
        if k == 2:
            release.set()
        return f"score{k}"

    with _Recording(workers=3) as ex:
        results, t = pipelined_rollouts(lambda k, c: f"out{k}", score, ["a", "b", "c"], ex)
    assert results == [("out0", "score0"), ("out1", "score1"), ("out2", "score2")]
    ends = [k for name, k, _ in t.events if name == "score_end"]
    assert ends.index(2) < ends.index(0)


def test_serial_without_executor_or_with_one_chunk():
    for ex, chunks in ((None, [1, 2, 3]), (concurrent.futures.ThreadPoolExecutor(1), [1])):
        threads = set()

        def score(k, c, o):
            threads.add(threading.get_ident())
            return o + 1

        results, t = pipelined_rollouts(lambda k, c: c * 2, score, chunks, ex)
        assert results == [(c * 2, c * 2 + 1) for c in chunks]
        names = [name for name, _, _ in t.events]
        assert names == ["gen_start", "gen_end", "score_start", "score_end"] * len(chunks)
        assert t.overlap_s == 0.0 and threads == {threading.get_ident()}  # in the caller, as before
        if ex is not None:
            ex.shutdown()


def test_a_scoring_error_propagates_and_stops_generation():
    generated, gen1 = [], threading.Event()

    def score(k, chunk, out):
        if k == 0:
            assert gen1.wait(WAIT)  # fails while chunk 1 generates
            raise ValueError("verifier broke")
        return 1.0

    with _Recording() as ex:

        def generate(k, chunk):
            generated.append(k)
            if k == 1:  # chunk 0's score has failed before chunk 1 is handed over
                gen1.set()
                concurrent.futures.wait(ex.futures[:1], timeout=WAIT)
            return k

        with pytest.raises(ValueError, match="verifier broke") as err:
            pipelined_rollouts(generate, score, [0, 1, 2, 3], ex)
    assert any("chunk 1 of 4" in note for note in err.value.__notes__)
    assert generated == [0, 1], "nothing is generated after a failed score is seen"
    # the same error type as without overlap
    with pytest.raises(ValueError, match="verifier broke"):
        pipelined_rollouts(lambda k, c: k, score, [0, 1], None)


def test_a_generation_error_leaves_no_scoring_running():
    scoring = threading.Event()
    finished = []

    def score(k, chunk, out):
        scoring.set()
        time.sleep(0.2)
        finished.append(k)

    def generate(k, chunk):
        if k == 1:
            assert scoring.wait(WAIT)
            raise RuntimeError("device lost")
        return k

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        with pytest.raises(RuntimeError, match="device lost"):
            pipelined_rollouts(generate, score, [0, 1, 2], ex)
        assert finished == [0], "chunk 0's scoring finished before the error reached the caller"


# ----------------------------------------------------------------------------- the trainer
def _config(tmp_path, name, chunks, **rollout):
    c = shrink(grpo.get_config(), tmp_path / name, steps=1)
    c.train.questions_per_step = 4
    c.rollout.overlap_chunks = chunks
    for k, v in rollout.items():
        setattr(c.rollout, k, v)
    return c


def _draw(t, key):
    records = next(iter(t.dataset))
    prompts = [t.prompt_ids(r["question"]) for r in records]
    timing = dict(rollout_s=0.0, rollout_compile_s=0.0, reward_s=0.0)
    return records, t.rollouts(records, prompts, key, timing), timing


@pytest.fixture(scope="module")
def greedy_trainers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("overlap")
    ts = {c: Trainer(_config(tmp, f"c{c}", c, temperature=0.0)) for c in (1, 2)}
    yield ts
    for t in ts.values():
        t.close()


def test_two_chunks_give_the_same_groups_as_one_when_greedy(greedy_trainers):
    """Greedy: C = 2 reproduces C = 1 exactly, groups in question order, verifier counts complete."""
    key = jax.random.key(3)
    (r1, g1, t1), (r2, g2, t2) = (_draw(greedy_trainers[c], key) for c in (1, 2))
    assert greedy_trainers[2].score_executor is not None and greedy_trainers[1].score_executor is None
    assert [g["record"] for g in g2] == list(r2) == list(r1), "groups in question order"
    for a, b in zip(g1, g2):
        assert a["prompt"] == b["prompt"] and a["responses"] == b["responses"]
        np.testing.assert_array_equal(a["rewards"], b["rewards"])
        for x, y in zip(a["logp"], b["logp"]):
            np.testing.assert_allclose(x, y, atol=1e-5)
    assert t1["reward_overlap_s"] == 0.0 and t2["reward_overlap_s"] >= 0.0
    # the verifier's reason counts cover every rollout in both
    for t in greedy_trainers.values():
        assert sum(t.verifier.metrics().values()) == 4 * 2


def test_sampled_chunks_give_the_same_tokens_as_one_call(tmp_path):
    """With sampling (temperature 1): the sampler keys each row by its global index, so C = 2
    reproduces C = 1 token for token; another key gives other tokens."""
    ts = {c: Trainer(_config(tmp_path, f"sampled{c}", c)) for c in (1, 2)}
    try:
        key = jax.random.key(5)
        records, a, _ = _draw(ts[2], key)
        _, one, _ = _draw(ts[1], key)
        assert [g["record"] for g in a] == list(records)
        assert [g["responses"] for g in a] == [g["responses"] for g in one]
        for x, y in zip(a, one):
            for p, q in zip(x["logp"], y["logp"]):
                np.testing.assert_allclose(p, q, atol=1e-5)
        _, c, _ = _draw(ts[2], jax.random.key(6))
        assert [g["responses"] for g in a] != [g["responses"] for g in c]
    finally:
        for t in ts.values():
            t.close()
    with pytest.raises(RuntimeError):  # close() shut the scoring thread pool down
        ts[2].score_executor.submit(print)


def test_a_verifier_error_reaches_the_caller(greedy_trainers, monkeypatch):
    t = greedy_trainers[2]

    def broken(outputs, golds):
        raise ValueError("verify_integer needs an integer reference")

    monkeypatch.setattr(t.verifier, "scores", broken)
    with pytest.raises(ValueError, match="integer reference") as err:
        _draw(t, jax.random.key(0))
    assert any("overlap_chunks=2" in note for note in err.value.__notes__)


def test_a_short_run_with_two_chunks_trains_with_dynamic_sampling(tmp_path):
    from tests.train.test_trainer import _CoinVerifier

    c = shrink(grpo.get_config("dapo"), tmp_path / "dapo", steps=2)
    c.rollout.overlap_chunks = 2
    c.rollout.n = 4
    t = Trainer(c)
    t.verifier = _CoinVerifier()
    try:
        history = t.run()
    finally:
        t.close()
    assert [m["step"] for m in history] == [1, 2]
    for m in history:
        assert m["skipped"] == 0 and np.isfinite(m["loss"]) and m["grad_norm"] > 0
        assert m["dynamic_sampling/groups_drawn"] >= c.train.questions_per_step
        assert 0 <= m["time/reward_overlap_s"] <= m["time/reward_s"]
        assert m["time/rollout_s"] > 0


def test_overlap_chunks_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="overlap_chunks"):
        Trainer(_config(tmp_path, "bad", 0))


def test_rollout_streams_reach_the_sampler(tmp_path):
    """``rollout.streams`` (a string from the command line, or an int) sets the sampler's streams."""
    t = Trainer(_config(tmp_path, "streams", 1, streams="3"))
    try:
        assert t.sampler.streams == 3
    finally:
        t.close()
    with pytest.raises(ValueError, match="streams"):
        Trainer(_config(tmp_path, "streams_bad", 1, streams="many"))
