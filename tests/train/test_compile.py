"""Compiles and time to the first step (issue #25): the trainer's ``time/first_step_s`` and
``compile/*`` metrics, one prompt bucket per online run (no recompile after step 1 when the steps'
prompts land in different buckets), the persistent compilation cache's settings."""

import jax
import numpy as np
import pytest

from experiments import grpo
from tests.train.test_trainer import shrink
from upt_jax.data import load_tokenizer
from upt_jax.data.templates import prompt_ids
from upt_jax.train import compile_cache, shapes
from upt_jax.train.batching import pack_rows
from upt_jax.train.compile_stats import CompileCounter
from upt_jax.train.trainer import Trainer


def test_cache_dir_resolution(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    assert compile_cache.resolve("auto", env) is not None
    assert compile_cache.resolve("auto", {}) == compile_cache.default_dir()
    assert compile_cache.resolve("auto", {compile_cache.ENV: "/x/y"}) == "/x/y"  # the env var under auto
    assert compile_cache.resolve("auto", {compile_cache.ENV: "off"}) is None
    assert compile_cache.resolve(str(tmp_path / "c"), {compile_cache.ENV: "off"}) == str(tmp_path / "c")  # config wins
    for off in ("off", "", "none", "OFF"):
        assert compile_cache.resolve(off, {compile_cache.ENV: "/x"}) is None


@pytest.fixture
def restore_cache_config():
    from jax.experimental.compilation_cache import compilation_cache as cc

    keys = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    old = {k: getattr(jax.config, k) for k in keys}
    yield
    for k, v in old.items():
        jax.config.update(k, v)
    cc.reset_cache()


def test_counter_counts_compiles_and_cache_hits(tmp_path, restore_cache_config):
    """A new program compiles once (counted), its second call does not; with the persistent
    cache on, the same program jitted anew is a cache hit, not a compile."""
    jax.config.update("jax_compilation_cache_dir", None)
    assert compile_cache.enable(setting=str(tmp_path / "xla"), min_compile_s=0.0) == str(tmp_path / "xla")
    assert compile_cache.enable(setting="off") == str(tmp_path / "xla")  # already set: kept
    x = np.arange(7.0, dtype=np.float32)
    counter = CompileCounter()
    try:
        f = jax.jit(lambda v: jax.numpy.sin(v) * 3.0 + 0.25)
        f(x).block_until_ready()
        assert (counter.count, counter.cache_hits) == (1, 0) and counter.seconds > 0
        f(x).block_until_ready()
        assert counter.count == 1
        g = jax.jit(lambda v: jax.numpy.sin(v) * 3.0 + 0.25)  # the same program: from the disk cache
        np.testing.assert_array_equal(g(x), f(x))
        assert (counter.count, counter.cache_hits) == (1, 1)
    finally:
        counter.close()
    jax.jit(lambda v: v - 1.0)(x)
    assert counter.count == 1  # closed: no longer listening
    import gc
    import weakref

    from upt_jax.train import compile_stats

    leaked = CompileCounter()  # never closed (a Trainer whose construction raised): gone with its owner
    assert compile_stats.is_listening(leaked)
    ref = weakref.ref(leaked)
    del leaked
    gc.collect()
    assert ref() is None  # the listeners hold no reference to it


def test_prompt_floor_and_pack_rows_floor():
    tok = load_tokenizer("char")
    from upt_jax.data import synthetic

    records = synthetic.generate("add_2", 3, seed=0) + synthetic.generate("add_5", 3, seed=0)
    ids = lambda r: prompt_ids(tok, r, "zero")
    longest = max(len(ids(r)) for r in records)
    assert 64 < longest <= 96  # add_5's prompts: the bucket above add_2's
    assert shapes.prompt_floor(records, ids) == 96
    assert shapes.prompt_floor(records[:3], ids) == 64
    assert list(shapes.scan_indices(10, 4)) == [0, 3, 6, 9] and len(shapes.scan_indices(3, 4)) == 3
    rows = pack_rows([[1, 2], [3]], [[4], [5, 6]], pad_id=0, min_prompt_len=20)
    assert rows["tokens"].shape == (2, 24 + 16) and rows["tokens"][0, 22:24].tolist() == [1, 2]
    longer = pack_rows([[1] * 30], [[2] * 50], pad_id=0, min_prompt_len=20)
    assert longer["tokens"].shape == (1, 32 + 64)  # a longer prompt still gets its own bucket


@pytest.mark.slow  # ~35 s: the first step's compiles on 8 simulated devices (test_trainer's resume test: the smoke)
def test_trainer_logs_first_step_time_and_compiles_once(tmp_path):
    """Two tiers whose prompts fall in different buckets (64 and 96 tokens; step 5 holds add_2's
    alone): the run pads every step to one shape, so nothing compiles after the first step."""
    c = shrink(grpo.get_config(), tmp_path / "run", steps=6)
    c.data.tiers = ("add_2", "add_5")
    c.compile_cache = "off"  # every compile counted as one (a warm cache would turn them into hits)
    c.checkpoint.every = 0
    t = Trainer(c)
    try:
        assert t.prompt_floor == 96
        history = [t.train_step() for _ in range(6)]
    finally:
        t.close()
    first, later = history[0], history[1:]
    assert 0 < first["compile/seconds"] < first["time/first_step_s"] and first["compile/count"] >= 3
    assert first["time/first_step_s"] >= first["time/step_s"]
    assert all("time/first_step_s" not in m for m in later)
    assert [m["compile/count"] for m in later] == [0] * 5
    assert [m["compile/total"] for m in history] == [first["compile/count"]] * 6
    tiers = [{k for k in m if k in ("reward/add_2", "reward/add_5")} for m in history]
    assert {"reward/add_5"} <= set().union(*tiers) and any("reward/add_5" not in ts for ts in tiers), (
        "the steps' longest prompts should fall in both buckets (else this test shows nothing)"
    )
