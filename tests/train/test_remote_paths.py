"""Run directories and checkpoints on a bucket path (``gs://…``), without a network.

``gs://`` is served by an emulated bucket on local disk, wired in where the real one would be:

* ``etils.epath`` (every file operation of the checkpoint integrity code, the metrics log, the
  pipeline and the trainer's run-directory files) reaches ``gs://`` through fsspec's ``gcs``
  protocol; ``FakeGCS`` is registered for it. It behaves like an object store where it matters:
  no append (``open(…, "a")`` raises), directories exist only while they hold an object
  (``mkdir`` is a no-op) and a file's parent needs no creating.
* Orbax writes the arrays with tensorstore, whose ``gcs`` driver talks HTTP to Google; Orbax's
  ``gcs_utils.get_kvstore_for_gcs`` is patched to give tensorstore's ``file`` driver the same
  bucket directory instead, and ``is_hierarchical_namespace_enabled`` (a Cloud Storage API call)
  answers ``False``. Everything else in Orbax takes its real ``gs://`` code path: commit by marker
  file instead of rename, no temporary directories, ``epath`` listing.

What stays untested here: tensorstore's own GCS driver and gcsfs's HTTP calls.
"""

import json
import logging
import os
import shutil

import importlib

import jax
import numpy as np
import pytest
from etils import epath
from flax import nnx
from etils.epath import backend as epath_backend
from fsspec.implementations.local import LocalFileSystem
from orbax.checkpoint._src.path import gcs_utils

from upt_jax.train.checkpoint import (
    MANIFEST,
    CheckpointError,
    Checkpointer,
    abstract_with_shardings,
    incomplete_saves,
    latest_checkpoint_dir,
    restore_params,
    verify_checkpoint,
)
from upt_jax.train.metrics_log import PARTS, MetricsWriter, read_metrics

LOGGER = "upt_jax.train.checkpoint"
BUCKET = "gs://bucket"


# ----------------------------------------------------------------------------- the emulated bucket
class FakeGCS(LocalFileSystem):
    """``gs://<bucket>/<key>`` as ``<root>/<bucket>/<key>`` with object-store semantics."""

    protocol = ("gs", "gcs")
    root = None  # set per test
    cachable = False

    def __init__(self, *args, **kwargs):
        kwargs.pop("finalize_on_close", None)  # what epath passes to gcsfs
        super().__init__(*args, **kwargs)

    @classmethod
    def _strip_protocol(cls, path):
        path = os.fspath(path)
        for prefix in ("gs://", "gcs://"):
            if path.startswith(prefix):
                return cls.root + "/" + path[len(prefix) :].rstrip("/")
        return super()._strip_protocol(path)

    def _remote(self, path):
        """A local path back to gcsfs's form (``bucket/key``, no protocol)."""
        return os.path.relpath(path, self.root)

    def _has_objects(self, path):
        return any(files for _, _, files in os.walk(path))

    def isdir(self, path):
        path = self._strip_protocol(path)
        return os.path.isdir(path) and self._has_objects(path)

    def exists(self, path, **kwargs):
        path = self._strip_protocol(path)
        return os.path.isfile(path) or self.isdir(path)

    def info(self, path, **kwargs):
        if not self.exists(path):
            raise FileNotFoundError(path)
        return super().info(path, **kwargs)

    def ls(self, path, detail=False, **kwargs):
        if not self.isdir(path):
            raise FileNotFoundError(path)
        out = super().ls(path, detail=True, **kwargs)
        out = [e for e in out if e["type"] == "file" or self._has_objects(e["name"])]
        return out if detail else [e["name"] for e in out]

    def glob(self, path, **kwargs):
        return [self._remote(p) for p in super().glob(path, **kwargs) if self.exists(p)]

    def walk(self, path, *args, **kwargs):
        for root, dirs, files in super().walk(path, *args, **kwargs):
            yield self._remote(root), dirs, files

    def mkdir(self, path, create_parents=True, **kwargs):
        pass  # a "directory" is a key prefix: it exists once an object is written under it

    def makedirs(self, path, exist_ok=False):
        pass

    def _open(self, path, mode="rb", **kwargs):
        if "a" in mode:
            raise NotImplementedError("an object store cannot append to an object")
        path = self._strip_protocol(path)
        if "w" in mode:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        return super()._open(path, mode, **kwargs)


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """``gs://bucket/…`` backed by ``tmp_path/gcs/bucket/…``; yields that local directory."""
    root = tmp_path / "gcs"
    (root / "bucket").mkdir(parents=True)
    fs_cls = type("FakeGCSForTest", (FakeGCS,), {"root": str(root)})
    for name in ("gs", "gcs"):
        monkeypatch.setitem(importlib.import_module("fsspec.registry")._registry, name, fs_cls)

    def kvstore(path):  # tensorstore's file driver on the same directory as the bucket
        bucket_name, key = gcs_utils.parse_gcs_path(path, add_trailing_slash=False)
        return {"driver": "file", "path": os.path.join(str(root), bucket_name, key)}

    monkeypatch.setattr(gcs_utils, "get_kvstore_for_gcs", kvstore)
    monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
    epath_backend.fsspec_backend._get_filesystem.cache_clear()
    yield root / "bucket"
    epath_backend.fsspec_backend._get_filesystem.cache_clear()


def test_the_emulated_bucket_is_an_object_store(bucket):
    p = epath.Path(f"{BUCKET}/a/b.txt")
    p.parent.mkdir(parents=True, exist_ok=True)
    assert not p.parent.exists()  # an empty prefix is no directory
    p.write_text("x")
    assert (bucket / "a" / "b.txt").read_text() == "x"
    assert p.parent.is_dir() and [q.name for q in p.parent.iterdir()] == ["b.txt"]
    assert [str(q) for q in epath.Path(BUCKET).glob("a/*")] == [f"{BUCKET}/a/b.txt"]
    with pytest.raises(NotImplementedError, match="append"):
        p.open("a")


# ----------------------------------------------------------------------------- checkpoints
def _tree(seed):
    rs = np.random.default_rng(seed)
    return {
        "params": {
            "w": jax.numpy.asarray(rs.standard_normal((4, 8)).astype(np.float32)),
            "b": jax.numpy.asarray(rs.standard_normal(8).astype(np.float32)),
        },
        "step": jax.numpy.asarray(seed, dtype=np.int32),
    }


def _equal(a, b):
    return all(
        np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def _save(directory, steps, **kw):
    with Checkpointer(directory, save_every=1, **kw) as ck:
        for s in steps:
            assert ck.save(s, _tree(s), {"step": s})


def test_checkpoints_on_a_bucket_are_committed_with_a_manifest_and_restored(bucket):
    directory = f"{BUCKET}/run/checkpoints"
    _save(directory, [1, 2, 3], keep=2)
    local = bucket / "run" / "checkpoints"
    assert sorted(os.listdir(local)) == ["2", "3"]  # last-k, in place: no temporary directories
    for s in (2, 3):
        assert (local / str(s) / "commit_success.txt").is_file()
        manifest = json.loads((local / str(s) / MANIFEST).read_text())
        assert manifest["step"] == s and any(k.startswith("state/") for k in manifest["files"])
        assert verify_checkpoint(f"{directory}/{s}") is None
    assert str(latest_checkpoint_dir(directory)) == f"{directory}/3"
    with Checkpointer(directory, read_only=True) as ck:
        assert ck.all_steps() == [2, 3] and str(ck.directory) == directory
        state, extra = ck.restore(abstract_with_shardings(_tree(0)))
    assert _equal(state, _tree(3)) and extra == {"step": 3}
    params = restore_params(directory, _tree(0)["params"], step=2)
    assert _equal(params, _tree(2)["params"])


def _damage(step_dir):
    """Truncate the largest array file of a step (what a partial upload or bit rot looks like)."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
    path = max(files, key=lambda p: p.stat().st_size)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_corrupted_latest_step_on_a_bucket_falls_back_and_is_moved_aside(bucket, caplog):
    directory = f"{BUCKET}/run/checkpoints"
    _save(directory, [1, 2])
    local = bucket / "run" / "checkpoints"
    _damage(local / "2")
    assert "truncated" in verify_checkpoint(f"{directory}/2", checksums=False)
    assert str(latest_checkpoint_dir(directory)) == f"{directory}/1"
    with caplog.at_level(logging.WARNING, logger=LOGGER), Checkpointer(directory, save_every=1) as ck:
        assert ck.latest_step() == 2
        state, extra = ck.restore(abstract_with_shardings(_tree(0)))
        assert _equal(state, _tree(1)) and extra == {"step": 1}
        assert ck.all_steps() == [1]  # step 2 moved aside on the bucket, so it can be saved again
        assert ck.save(2, _tree(2), {"step": 2})
    assert any("step 2" in r.getMessage() and "unusable" in r.getMessage() for r in caplog.records)
    assert sorted(os.listdir(local)) == ["1", "2", "2.corrupt"]
    assert verify_checkpoint(f"{directory}/2") is None


def test_an_uncommitted_save_on_a_bucket_is_ignored_and_removed(bucket, caplog):
    directory = f"{BUCKET}/run/checkpoints"
    _save(directory, [1, 2])
    local = bucket / "run" / "checkpoints"
    (local / "2" / "commit_success.txt").unlink()  # on a bucket, a save killed before its commit
    assert [p.name for p in incomplete_saves(directory)] == ["2"]
    assert str(latest_checkpoint_dir(directory)) == f"{directory}/1"
    with caplog.at_level(logging.WARNING, logger=LOGGER), Checkpointer(directory, save_every=1) as ck:
        assert ck.all_steps() == [1]
        state, _ = ck.restore(abstract_with_shardings(_tree(0)))
        assert _equal(state, _tree(1))
        assert ck.save(2, _tree(2), {"step": 2})  # the resumed run saves the step again (after
        # Orbax's background removal of the uncommitted one, which a save waits for)
    assert any("step 2" in r.getMessage() and "incomplete save" in r.getMessage() for r in caplog.records)
    assert sorted(os.listdir(local)) == ["1", "2"] and verify_checkpoint(f"{directory}/2") is None


def test_no_usable_checkpoint_on_a_bucket_raises(bucket):
    with pytest.raises(CheckpointError, match="does not exist"):
        restore_params(f"{BUCKET}/nothing", _tree(0)["params"])
    assert latest_checkpoint_dir(f"{BUCKET}/nothing") is None


# ----------------------------------------------------------------------------- metrics.jsonl
def test_metrics_log_on_a_bucket_appends_truncates_and_folds(bucket, caplog):
    run_dir, local = f"{BUCKET}/run", bucket / "run"
    w = MetricsWriter(run_dir)
    w.reset()
    for s in range(1, 4):
        w.write({"step": s, "loss": 1.0 / s})
    # every step is on the bucket at once, as its own object (no append on an object store)
    assert sorted(os.listdir(local / PARTS)) == ["000000000.json", "000000001.json", "000000002.json"]
    assert [r["step"] for r in read_metrics(run_dir)] == [1, 2, 3]
    w.close()  # folds the parts into metrics.jsonl
    assert not (local / PARTS).exists()
    assert [json.loads(x)["step"] for x in (local / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]

    # resume at step 2 (a fresh writer, as in a new process), with a line cut short by a crash
    (local / PARTS).mkdir()
    (local / PARTS / "000000003.json").write_text('{"step": 4, "lo')
    w = MetricsWriter(run_dir)
    w.truncate_after(2)
    assert "unreadable" in caplog.text
    assert [r["step"] for r in read_metrics(run_dir)] == [1, 2]
    w.write({"step": 3, "loss": 0.25})
    assert [r["step"] for r in read_metrics(run_dir)] == [1, 2, 3]

    # a crash after a fold but before its parts were deleted: the covered parts are skipped
    w.close()
    (local / PARTS).mkdir()
    (local / PARTS / "000000001.json").write_text('{"step": 2, "loss": 9}\n')
    assert [r["loss"] for r in read_metrics(run_dir)] == [1.0, 0.5, 0.25]
    w = MetricsWriter(run_dir)  # continues a log it did not start: nothing lost or doubled
    for s in range(4, 4 + 70):  # enough parts to fold without a close
        w.write({"step": s})
    assert [r["step"] for r in read_metrics(run_dir)] == list(range(1, 74))
    assert len(os.listdir(local / PARTS)) < 70
    w.close()
    assert [json.loads(x)["step"] for x in (local / "metrics.jsonl").read_text().splitlines()] == list(range(1, 74))


# ----------------------------------------------------------------------------- pipeline
def test_pipeline_done_json_on_a_bucket(bucket, monkeypatch):
    import ml_collections

    from upt_jax.train import pipeline, trainer

    ran = []

    def fake_train(c):  # the stage's files are the trainer's business (tested below)
        ran.append(c.run_dir)
        return [{"step": c.train.steps, "loss": 0.5}]

    monkeypatch.setattr(trainer, "train", fake_train)
    c = ml_collections.ConfigDict({"run_dir": f"{BUCKET}/pipe", "order": ("a", "b")})
    for name in c.order:
        c[name] = ml_collections.ConfigDict({"model": {"init": "preset", "checkpoint": ""}, "train": {"steps": 2}})
    reports = pipeline.run_pipeline(c)
    assert ran == [f"{BUCKET}/pipe/a", f"{BUCKET}/pipe/b"] and [r["status"] for r in reports] == ["ran"] * 2
    assert c.b.model.checkpoint == f"{BUCKET}/pipe/a"  # the hand-off names the bucket path
    done = json.loads((bucket / "pipe" / "a" / "DONE.json").read_text())
    assert done["run_dir"] == f"{BUCKET}/pipe/a" and done["steps"] == 2
    again = pipeline.run_pipeline(c)
    assert ran == [f"{BUCKET}/pipe/a", f"{BUCKET}/pipe/b"]
    assert [r["status"] for r in again] == ["already done"] * 2


# ----------------------------------------------------------------------------- a whole run
def test_train_on_a_bucket_run_dir_checkpoints_resumes_and_hands_off(bucket):
    from experiments import sft
    from tests.train.test_trainer import shrink
    from upt_jax.data import load_tokenizer
    from upt_jax.train.trainer import validate, build_model, train

    run_dir, local = f"{BUCKET}/runs/sft", bucket / "runs" / "sft"
    c = shrink(sft.get_config(), run_dir, steps=1)
    c.checkpoint.keep = 2
    assert [m["step"] for m in train(c)] == [1]
    c.train.steps = 2
    assert [m["step"] for m in train(c)] == [2]  # resumed from the bucket
    assert json.loads((local / "config.json").read_text())["run_dir"] == run_dir
    assert [r["step"] for r in read_metrics(run_dir)] == [1, 2]
    assert [json.loads(x)["step"] for x in (local / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert sorted(os.listdir(local / "checkpoints")) == ["1", "2"]
    assert str(latest_checkpoint_dir(f"{run_dir}/checkpoints", checksums=True)) == f"{run_dir}/checkpoints/2"
    # the next stage starts from the bucket run (inputs checked, shape from its config.json, the
    # params restored) exactly as from a local copy of it
    shutil.copytree(local, bucket.parent.parent / "copy")
    models = []
    for source in (run_dir, str(bucket.parent.parent / "copy")):
        nxt = shrink(sft.get_config(), f"{BUCKET}/runs/next", steps=1)
        nxt.model.init, nxt.model.checkpoint, nxt.model.overrides = "checkpoint", source, {}
        validate(nxt)
        models.append(build_model(nxt.model, vocab_size=load_tokenizer(nxt.tokenizer).vocab_size))
        assert nxt.model.overrides.to_dict() == c.model.overrides.to_dict()
    assert _equal(nnx.state(models[0]), nnx.state(models[1]))
    assert not epath.Path(f"{BUCKET}/runs/next").exists()  # the write probe left nothing behind


def test_a_reward_model_on_a_bucket_run_dir_writes_its_config_and_loads_back(bucket):
    """The reward-model trainer writes config.json through the run directory's filesystem layer
    (epath, as the policy does; it used open()), and a learned reward loads from the bucket."""
    from experiments import reward_model
    from tests.train.test_trainer import shrink
    from upt_jax.train.reward_model import load_reward_model, train_reward_model

    run_dir, local = f"{BUCKET}/runs/rm", bucket / "runs" / "rm"
    c = shrink(reward_model.get_config(), run_dir, steps=1)
    assert [m["step"] for m in train_reward_model(c)] == [1]
    assert json.loads((local / "config.json").read_text())["run_dir"] == run_dir
    assert [r["step"] for r in read_metrics(run_dir)] == [1]
    assert sorted(os.listdir(local / "checkpoints")) == ["1"]
    _, params = load_reward_model(run_dir)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
