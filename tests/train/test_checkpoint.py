"""Orbax checkpoints: bitwise roundtrip, sharded restore, last-k, async, params-only, corruption."""

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from upt_jax.models import init_model, make_mesh, preset
from upt_jax.train import create_train_state, make_optimizer, state_shardings
from upt_jax.train.checkpoint import (
    MANIFEST,
    CheckpointError,
    Checkpointer,
    abstract_with_shardings,
    latest_checkpoint_dir,
    restore_params,
    verify_checkpoint,
    write_manifest,
)

CFG = preset(
    "tiny", num_layers=2, vocab_size=64, hidden_size=32, intermediate_size=64, num_heads=4, num_kv_heads=2, head_dim=8
)
LOGGER = "upt_jax.train.checkpoint"


@pytest.fixture(scope="module")
def states():
    """TrainStates after 1, 2 and 3 real AdamW updates (non-trivial moments and count)."""
    tx = make_optimizer(1e-2, max_grad_norm=1.0)
    _, state, _ = create_train_state(init_model(CFG, 0), tx, seed=0)

    @jax.jit
    def update(state, grads):
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            opt_state=opt_state,
            rng=jax.random.key_data(jax.random.split(state.key)[0]),
        )

    rs, out = np.random.default_rng(0), []
    for _ in range(3):
        state = update(state, jax.tree.map(lambda x: rs.standard_normal(x.shape).astype(x.dtype), state.params))
        out.append(state)
    return out


def _assert_bitwise_equal(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def _save_steps(directory, states, steps, **kw):
    with Checkpointer(directory, save_every=1, **kw) as ck:
        for s, st in zip(steps, states):
            assert ck.save(s, st, {"step": s})
    return list(steps)


def test_roundtrip_is_bitwise_with_extra_json_and_no_unpickling(tmp_path, states, monkeypatch):
    state = states[1]
    assert int(state.step) == 2 and int(state.opt_state[1][0].count) == 2  # Adam moments are live
    assert float(jnp.abs(state.opt_state[1][0].nu["lm_head"]["kernel"].value).max()) > 0
    extra = {
        "data_iterator": {"epoch": 1, "index": 17, "perm_seed": [3, 4]},
        "config": {"train": {"lr": 1e-5, "steps": 10, "schedule": "cosine"}, "name": "x", "flag": None},
    }
    with Checkpointer(tmp_path, save_every=5, async_save=False) as ck:
        assert not ck.save(3, state, extra)  # 3 % 5 != 0
        assert ck.save(5, state, extra) and ck.all_steps() == [5] and ck.latest_step() == 5
        assert not ck.save(5, state, extra, force=True)  # already saved
        assert verify_checkpoint(tmp_path / "5") is None

        def no_pickle(*a, **k):
            raise AssertionError("checkpoint restore unpickled something")

        monkeypatch.setattr(pickle, "load", no_pickle)
        monkeypatch.setattr(pickle, "loads", no_pickle)
        monkeypatch.setattr(pickle, "Unpickler", no_pickle)
        restored, got_extra = ck.restore(abstract_with_shardings(state))
    _assert_bitwise_equal(state, restored)
    assert type(restored) is type(state) and got_extra == extra
    assert isinstance(restored.params["lm_head"]["kernel"].value, jax.Array)
    # the manifest lists every data file with its size
    files = json.loads((tmp_path / "5" / MANIFEST).read_text())["files"]
    assert any(k.startswith("state/") for k in files) and "extra/metadata" in files


def test_restore_onto_2x2x2_mesh_gives_the_requested_shardings(tmp_path, states):
    state = states[1]  # saved from one device
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    assert mesh.devices.size == 8
    want = state_shardings(jax.eval_shape(lambda: state), mesh)
    with Checkpointer(tmp_path, async_save=False) as ck:
        ck.save(2, state, force=True)
        restored, extra = ck.restore(abstract_with_shardings(state, want))
    assert extra == {}
    _assert_bitwise_equal(state, restored)
    got_s, want_s = jax.tree.leaves(jax.tree.map(lambda x: x.sharding, restored)), jax.tree.leaves(want)
    assert len(got_s) == len(want_s)
    assert all(g == w for g, w in zip(got_s, want_s))
    assert any(w.spec != jax.sharding.PartitionSpec() for w in want_s)  # really sharded, not replicated
    # and a state saved sharded on the mesh comes back onto the mesh and onto one device
    sharded = jax.device_put(states[2], want)
    with Checkpointer(tmp_path / "sharded", async_save=False) as ck:
        ck.save(3, sharded, force=True)
        back, _ = ck.restore(abstract_with_shardings(sharded, want))
        single, _ = ck.restore(abstract_with_shardings(sharded, jax.sharding.SingleDeviceSharding(jax.devices()[0])))
    _assert_bitwise_equal(states[2], back)
    _assert_bitwise_equal(states[2], single)
    assert all(x.sharding == w for x, w in zip(jax.tree.leaves(back), want_s))
    assert all(len(x.devices()) == 1 for x in jax.tree.leaves(single))


def test_keep_two_leaves_the_last_two(tmp_path, states):
    with Checkpointer(tmp_path, keep=2, save_every=2) as ck:
        saved = [ck.save(s, states[s % 3], {"s": s}) for s in range(1, 9)]
        ck.wait()
        assert saved == [False, True] * 4
        assert ck.all_steps() == [6, 8]
        restored, extra = ck.restore(abstract_with_shardings(states[0]))
    assert sorted(os.listdir(tmp_path)) == ["6", "8"]
    assert extra == {"s": 8}
    _assert_bitwise_equal(states[8 % 3], restored)
    # a reopened Checkpointer sees the same steps and keeps pruning
    with Checkpointer(tmp_path, keep=2, save_every=2) as ck:
        assert ck.latest_step() == 8 and ck.save(10, states[0])
    assert sorted(os.listdir(tmp_path)) == ["10", "8"]


def test_async_save_copies_before_returning_then_wait_then_restore(tmp_path, states):
    expected = jax.device_get(states[2])
    live = jax.tree.map(jnp.copy, states[2])
    ck = Checkpointer(tmp_path, async_save=True)
    assert ck.save(3, live, {"k": [1, 2]}, force=True)
    for x in jax.tree.leaves(live):  # as a donating train step would
        x.delete()
    ck.wait()
    assert ck.all_steps() == [3] and not list(tmp_path.glob("*orbax-checkpoint-tmp*"))
    restored, extra = ck.restore(abstract_with_shardings(states[2]))
    ck.close()
    _assert_bitwise_equal(expected, restored)
    assert extra == {"k": [1, 2]}


def test_params_only_restore_into_a_fresh_state(tmp_path, states):
    trained = states[2]
    _save_steps(tmp_path / "stage1", [states[0], trained], [1, 3])
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    tx = make_optimizer(1e-3)
    _, fresh, shardings = create_train_state(init_model(CFG, 7), tx, seed=7, mesh=mesh)
    params = restore_params(tmp_path / "stage1", abstract_with_shardings(fresh.params, shardings.params))
    _assert_bitwise_equal(trained.params, params)
    assert all(x.sharding == s for x, s in zip(jax.tree.leaves(params), jax.tree.leaves(shardings.params)))
    nxt = fresh.replace(params=params)
    assert int(nxt.step) == 0 and int(nxt.opt_state[1][0].count) == 0  # fresh optimiser
    # an explicit step, and unsharded (first device) when no sharding is given
    first = restore_params(tmp_path / "stage1", jax.eval_shape(lambda: trained.params), step=1)
    _assert_bitwise_equal(states[0].params, first)
    assert sorted(os.listdir(tmp_path / "stage1")) == ["1", "3"]  # read-only
    with pytest.raises(CheckpointError, match="does not exist"):
        restore_params(tmp_path / "nothing", fresh.params)


def _largest_state_file(step_dir):
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


def _truncate(step_dir):
    path = _largest_state_file(step_dir)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return "bytes"


def _bitflip(step_dir):
    path = _largest_state_file(step_dir)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return "SHA-256"


def _missing_file(step_dir):
    (step_dir / "state" / "_METADATA").unlink()
    return "state/_METADATA is missing"


def _no_commit_marker(step_dir):
    (step_dir / "commit_success.txt").unlink()
    return "commit marker"


def _bad_manifest(step_dir):
    path = step_dir / MANIFEST
    path.write_text(path.read_text()[:40])
    return "manifest"


def _truncate_and_rehash(step_dir):  # damage the manifest cannot see: Orbax's own read fails
    _truncate(step_dir)
    write_manifest(step_dir, int(step_dir.name))
    return "Orbax could not read it"


@pytest.mark.parametrize(
    "damage", [_truncate, _bitflip, _missing_file, _no_commit_marker, _bad_manifest, _truncate_and_rehash]
)
def test_corrupted_latest_falls_back_to_the_previous_step(tmp_path, states, caplog, damage):
    _save_steps(tmp_path, states[:2], [1, 2])
    reason = damage(tmp_path / "2")
    with caplog.at_level(logging.WARNING, logger=LOGGER), Checkpointer(tmp_path, save_every=1) as ck:
        assert ck.latest_step() == 2
        restored, extra = ck.restore(abstract_with_shardings(states[0]))
        _assert_bitwise_equal(states[0], restored)
        assert extra == {"step": 1}
        msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("step 2" in m and "unusable" in m and reason in m for m in msgs), msgs
        # the bad step is moved aside and can be saved again by the resumed run
        assert ck.all_steps() == [1] and (tmp_path / "2.corrupt").is_dir()
        assert ck.save(2, states[1], {"step": 2})
        ck.wait()
        again, _ = ck.restore(abstract_with_shardings(states[0]))
    _assert_bitwise_equal(states[1], again)


def test_half_written_temp_dir_from_a_crash_is_reported_and_ignored(tmp_path, states, caplog):
    _save_steps(tmp_path, states[:2], [1, 2])
    tmp = tmp_path / "3.orbax-checkpoint-tmp"  # what a process killed mid-save leaves
    shutil.copytree(tmp_path / "2", tmp)
    (tmp / "commit_success.txt").unlink()
    _truncate(tmp)
    with caplog.at_level(logging.WARNING, logger=LOGGER), Checkpointer(tmp_path, save_every=1) as ck:
        assert ck.all_steps() == [1, 2]
        restored, _ = ck.restore(abstract_with_shardings(states[0]))
        _assert_bitwise_equal(states[1], restored)
        assert ck.save(3, states[2])
    assert any("step 3" in r.getMessage() and "incomplete save" in r.getMessage() for r in caplog.records)
    assert sorted(os.listdir(tmp_path)) == ["1", "2", "3"]
    assert latest_checkpoint_dir(tmp_path) == tmp_path / "3"


def test_a_checkpointer_closed_before_any_save_leaves_no_thread_behind(tmp_path):
    """A run stopped before its first save (SIGTERM while the trainer is built) opens and closes
    its Checkpointer at once, then exits: no background thread (Orbax's temporary-directory
    cleanup, slowed down here as on a loaded host) may outlive close() and meet the interpreter's
    shutdown with a traceback, as one once did in CI."""
    script = f"""
import asyncio, threading
from orbax.checkpoint._src.path import temporary_paths
cleanup = temporary_paths.cleanup_temporary_paths
async def slow(*a, **k):
    await asyncio.sleep(1.0)
    return await cleanup(*a, **k)
temporary_paths.cleanup_temporary_paths = slow
from upt_jax.train.checkpoint import Checkpointer
before = set(threading.enumerate())
Checkpointer({str(tmp_path / "ck")!r}, save_every=1).close()
print("left:", sorted(t.name for t in set(threading.enumerate()) - before if t.is_alive()))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "left: []" in out.stdout, out.stdout


def test_no_good_checkpoint_raises_a_clear_error(tmp_path, states):
    abstract = abstract_with_shardings(states[0])
    with Checkpointer(tmp_path / "empty") as ck, pytest.raises(CheckpointError, match="no checkpoint in"):
        ck.restore(abstract)
    _save_steps(tmp_path / "run", states[:2], [1, 2])
    _truncate(tmp_path / "run" / "1")
    _missing_file(tmp_path / "run" / "2")
    with Checkpointer(tmp_path / "run", read_only=True) as ck:
        with pytest.raises(CheckpointError, match="step 1 in .* is unusable: file state/.*truncated"):
            ck.restore(abstract, step=1)  # an explicit step does not fall back
        with pytest.raises(CheckpointError, match="no committed checkpoint for step 5"):
            ck.restore(abstract, step=5)
        with pytest.raises(CheckpointError) as err:
            ck.restore(abstract)
    msg = str(err.value)
    assert "no usable checkpoint" in msg and "step 2: file state/_METADATA is missing" in msg
    assert "step 1: file state/" in msg
    assert sorted(os.listdir(tmp_path / "run")) == ["1", "2"]  # nothing moved when nothing is usable
    assert latest_checkpoint_dir(tmp_path / "run") is None
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        restore_params(tmp_path / "run", states[0].params)


def test_a_non_finite_checkpoint_is_never_resumed_from(tmp_path, states, caplog):
    """A step whose arrays hold NaN (written before the update step checked its result, or by
    another program) passes every file check but is refused on restore: the previous step is
    used, with a warning naming the step and the array (regression: it was loaded silently)."""
    bad = states[1].replace(params=jax.tree.map(lambda x: x * jnp.nan, states[1].params))
    _save_steps(tmp_path, [states[0], bad], [1, 2])
    with caplog.at_level(logging.WARNING, logger=LOGGER), Checkpointer(tmp_path, save_every=1) as ck:
        restored, extra = ck.restore(abstract_with_shardings(states[0]))
    _assert_bitwise_equal(states[0], restored)
    assert extra == {"step": 1}
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("step 2" in m and "not finite" in m and "params" in m for m in msgs), msgs
    # params-only restore (stage hand-off) refuses it too, and an explicit step raises
    _save_steps(tmp_path / "b", [states[0], bad], [1, 2])
    params = restore_params(tmp_path / "b", abstract_with_shardings(states[0].params))
    _assert_bitwise_equal(states[0].params, params)
    with pytest.raises(CheckpointError, match="step 2 .* unusable: restored values are not finite"):
        restore_params(tmp_path / "b", abstract_with_shardings(states[0].params), step=2)
