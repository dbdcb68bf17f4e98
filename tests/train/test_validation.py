"""Bad configs and bad inputs get a clear message naming the config key, before any model is built
(``build_model`` is replaced by a function that fails the test)."""

import json
import logging
import os
import pickle
import shutil

import pytest

from experiments import grpo, hpt, sft
from tests.train.test_trainer import shrink
from upt_jax.train import checks
from upt_jax.train import trainer as trainer_lib
from upt_jax.train.trainer import Trainer


@pytest.fixture
def no_model(monkeypatch):
    def build_model(*a, **k):
        pytest.fail("a model was built before the config error was reported")

    monkeypatch.setattr(trainer_lib, "build_model", build_model)


def _hf_dir(tmp_path, files):
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text(
        json.dumps(
            {
                "model_type": "qwen2",
                "vocab_size": 64,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
            }
        )
    )
    for name, data in files.items():
        (d / name).write_bytes(data)
    return str(d)


def _hpt(tmp_path, gamma, n=4):
    c = shrink(hpt.get_config(), tmp_path / "run", steps=1)
    c.recipe.hparams.gamma = gamma
    c.rollout.n = n
    return c


def _set(c, **kw):
    for key, v in kw.items():
        obj, *rest = key.split(".")
        node = getattr(c, obj) if rest else c
        for p in rest[:-1]:
            node = getattr(node, p)
        setattr(node, rest[-1] if rest else obj, v)
    return c


CASES = {
    "hpt_gamma_one": (
        lambda t: _hpt(t, 1.0),
        ValueError,
        r"config\.recipe\.hparams\.gamma=1\.0.*0 ≤ γ < 1.*config\.rollout\.n=4.*0/4, 1/4.*no P exceeds γ",
    ),
    "hpt_gamma_negative": (
        lambda t: _hpt(t, -0.25),
        ValueError,
        r"config\.recipe\.hparams\.gamma=-0\.25.*no demonstration would ever be used",
    ),
    "group_advantage_n1": (
        lambda t: _set(shrink(grpo.get_config(), t / "run", 1), **{"rollout.n": 1}),
        ValueError,
        r"config\.rollout\.n=1.*group-normalised advantages \(grpo\)",
    ),
    "hpt_n1": (lambda t: _hpt(t, 0.0, n=1), ValueError, r"config\.rollout\.n=1.*'hpt'"),
    "mesh_vs_devices": (
        lambda t: _set(shrink(grpo.get_config(), t / "run", 1), **{"mesh.data": 3}),
        ValueError,
        r"config\.mesh data=3 .* does not fit 8 devices",
    ),
    "mesh_zero": (
        lambda t: _set(shrink(grpo.get_config(), t / "run", 1), **{"mesh.fsdp": 0}),
        ValueError,
        r"config\.mesh\.fsdp=0: must be an int ≥ 1, or -1",
    ),
    "rows_vs_mesh": (
        lambda t: _set(shrink(grpo.get_config(), t / "run", 1), **{"train.questions_per_step": 1, "rollout.n": 3}),
        ValueError,
        r"3 rows \(config\.train\.questions_per_step=1 × group size 3\) do not split "
        r"over config\.mesh data × fsdp = 2",
    ),
    "microbatches": (
        lambda t: _set(
            shrink(grpo.get_config(), t / "run", 1), **{"train.questions_per_step": 3, "train.microbatches": 2}
        ),
        ValueError,
        r"questions_per_step=3 is not divisible by microbatches=2",
    ),
    "max_nonfinite": (
        lambda t: _set(shrink(grpo.get_config(), t / "run", 1), **{"train.max_nonfinite_in_a_row": 0}),
        ValueError,
        r"config\.train\.max_nonfinite_in_a_row=0",
    ),
    "hf_dir_missing": (
        lambda t: _set(
            shrink(grpo.get_config(), t / "run", 1), **{"model.init": "hf", "model.hf_dir": str(t / "nope")}
        ),
        FileNotFoundError,
        r"config\.model\.hf_dir=.*nope.* is not a directory",
    ),
    "hf_dir_pickle_only": (
        lambda t: _set(
            shrink(grpo.get_config(), t / "run", 1),
            **{"model.init": "hf", "model.hf_dir": _hf_dir(t, {"pytorch_model.bin": pickle.dumps({"w": 1})})},
        ),
        ValueError,
        r"config\.model\.hf_dir=.*only pickle-based weights.*safetensors only",
    ),
    "hf_dir_no_weights": (
        lambda t: _set(shrink(grpo.get_config(), t / "run", 1), **{"model.init": "hf", "model.hf_dir": _hf_dir(t, {})}),
        FileNotFoundError,
        r"config\.model\.hf_dir=.*has no model\.safetensors",
    ),
    "init_checkpoint_missing": (
        lambda t: _set(
            shrink(grpo.get_config(), t / "run", 1),
            **{"model.init": "checkpoint", "model.checkpoint": str(t / "no_run")},
        ),
        FileNotFoundError,
        r"config\.model\.checkpoint=.*no_run.* is not a directory",
    ),
    "init_checkpoint_empty": (
        lambda t: (
            os.makedirs(t / "empty_run" / "checkpoints"),
            _set(
                shrink(grpo.get_config(), t / "run", 1),
                **{"model.init": "checkpoint", "model.checkpoint": str(t / "empty_run")},
            ),
        )[1],
        FileNotFoundError,
        r"config\.model\.checkpoint=.*empty_run.* holds no saved step",
    ),
    "tokenizer_missing": (
        lambda t: _set(shrink(grpo.get_config(), t / "run", 1), **{"tokenizer": str(t / "tok")}),
        FileNotFoundError,
        r"config\.tokenizer=.*tok.* is neither 'char' nor",
    ),
    "data_path_missing": (
        lambda t: _set(
            shrink(grpo.get_config(), t / "run", 1), **{"data.source": "file", "data.path": str(t / "train*.jsonl")}
        ),
        FileNotFoundError,
        r"config\.data\.path: .*train\*\.jsonl.* does not exist",
    ),
    "data_path_empty": (
        lambda t: _set(shrink(grpo.get_config(), t / "run", 1), **{"data.source": "file"}),
        ValueError,
        r"config\.data\.path is empty",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_config_error_before_any_model_is_built(tmp_path, no_model, case):
    make, exc, message = CASES[case]
    config = make(tmp_path)
    with pytest.raises(exc, match=message):
        Trainer(config)


def test_unwritable_run_dir(tmp_path, no_model, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    c = shrink(grpo.get_config(), blocker / "run", steps=1)  # cannot be created, even by root
    with pytest.raises(PermissionError, match=r"config\.run_dir=.*a_file/run.* is not a writable directory"):
        Trainer(c)
    # a directory that exists but refuses new files (os.access says yes to root: the probe is a file)
    c = shrink(grpo.get_config(), tmp_path / "ro", steps=1)
    os.makedirs(c.run_dir)
    import tempfile

    def refuse(*a, **k):
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(PermissionError, match=r"config\.run_dir=.*ro.* is not a writable directory.*Read-only"):
        Trainer(c)


def test_too_little_disk_for_a_checkpoint(tmp_path, no_model, monkeypatch):
    c = shrink(sft.get_config(), tmp_path / "run", steps=1)
    need = trainer_lib.checkpoint_bytes_estimate(c, vocab_size=105)
    assert need > 0
    real = shutil.disk_usage

    def usage(path):
        u = real(path)
        return type(u)(u.total, u.total - need // 2, need // 2)

    monkeypatch.setattr(shutil, "disk_usage", usage)
    with pytest.raises(OSError, match=r"config\.run_dir=.*MiB free, but 3 more checkpoint\(s\) need about"):
        Trainer(c)


def _free(monkeypatch, free_bytes):
    """``shutil.disk_usage`` reports ``free_bytes()`` free (a function: it may look at the disk)."""
    real = shutil.disk_usage

    def usage(path):
        u = real(path)
        free = int(free_bytes())
        return type(u)(u.total, u.total - free, free)

    monkeypatch.setattr(shutil, "disk_usage", usage)


def test_disk_check_sizes_keep_plus_one_checkpoints(tmp_path, monkeypatch):
    """``checkpoint.keep`` are kept and one more is written before the oldest is deleted: room for
    one checkpoint is not enough for keep = 2; a resumed run whose saved checkpoints already take
    their space needs room for the rest only."""
    c = shrink(sft.get_config(), tmp_path / "run", steps=1)
    c.checkpoint.keep = 2
    one = trainer_lib.checkpoint_bytes_estimate(c, vocab_size=105)
    os.makedirs(c.run_dir)
    _free(monkeypatch, lambda: 2.5 * one)
    with pytest.raises(
        OSError,
        match=r"but 3 more checkpoint\(s\) need about .*config\.checkpoint\.keep=2 "
        r"kept plus one being written",
    ):
        checks.check_disk(c, vocab_size=105)
    for step in (4, 5):  # two saved already (an older run of this directory)
        os.makedirs(os.path.join(c.run_dir, "checkpoints", str(step)))
    checks.check_disk(c, vocab_size=105)
    _free(monkeypatch, lambda: 0.5 * one)
    with pytest.raises(OSError, match=r"but 1 more checkpoint\(s\) need about .*2 already saved"):
        checks.check_disk(c, vocab_size=105)


def test_leftovers_of_a_failed_save_are_removed_before_the_disk_check(tmp_path, monkeypatch):
    """A save that failed on a full disk leaves its temporary directory, which holds space: it is
    removed before the free-space check, so rerunning the same command is not refused."""
    from upt_jax.train.checkpoint import TMP_SUFFIX

    c = shrink(sft.get_config(), tmp_path / "run", steps=1)
    one = trainer_lib.checkpoint_bytes_estimate(c, vocab_size=105)
    leftover = tmp_path / "run" / "checkpoints" / f"3{TMP_SUFFIX}"
    (leftover / "state").mkdir(parents=True)
    (leftover / "state" / "half_written").write_bytes(b"\0" * 1024)
    _free(monkeypatch, lambda: one if leftover.exists() else 100 * one)  # its space comes back

    class Built(Exception):
        pass

    def build_model(*a, **k):
        raise Built  # every check passed

    monkeypatch.setattr(trainer_lib, "build_model", build_model)
    with pytest.raises(Built):
        Trainer(c)
    assert not leftover.exists()


def test_checkpoint_estimate_counts_params_and_adam_moments():
    c = grpo.get_config()
    c.model.overrides = dict(num_layers=1)
    from upt_jax.models import preset

    n = preset("tiny", num_layers=1, vocab_size=100).num_params()
    assert trainer_lib.checkpoint_bytes_estimate(c, vocab_size=100) == n * 12  # fp32 + 2 fp32 moments
    c.model.param_dtype = "bfloat16"
    assert trainer_lib.checkpoint_bytes_estimate(c, vocab_size=100) == n * 10


# ----------------------------------------------------------------------------- data, at the trainer
def _jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(r if isinstance(r, str) else json.dumps(r))
            f.write("\n")
    return str(path)


def _file_config(tmp_path, data, **kw):
    c = shrink(grpo.get_config(), tmp_path / "run", steps=1)
    c.data.source, c.data.path = "file", data
    return _set(c, **kw)


GOOD = [{"id": f"q{i}", "question": f"What is {i}+1?", "answer": str(i + 1)} for i in range(4)]


def test_malformed_row_names_file_and_line_before_any_model_is_built(tmp_path, no_model):
    path = _jsonl(tmp_path / "train.jsonl", GOOD[:2] + ['{"id": "q9", "question": "broken'] + GOOD[2:])
    with pytest.raises(Exception, match=r"train\.jsonl:3"):
        Trainer(_file_config(tmp_path, path))


def test_skipped_bad_rows_are_counted_in_the_metrics(tmp_path, caplog):
    """``data.skip_bad_rows=True``: bad rows are logged and counted in every step's metrics."""
    from upt_jax.train.metrics_log import read_metrics
    from upt_jax.train.trainer import train

    rows = [dict(r, demonstration=f"so \\boxed{{{r['answer']}}}") for r in GOOD]
    path = _jsonl(tmp_path / "train.jsonl", rows[:2] + ['{"id": "q9", "question": "broken', "[1, 2]"] + rows[2:])
    c = shrink(sft.get_config(), tmp_path / "run", steps=1)
    c.data.source, c.data.path, c.data.skip_bad_rows = "file", path, True
    with caplog.at_level(logging.WARNING, logger="upt_jax.train.trainer"):
        train(c)
    msgs = [r.getMessage() for r in caplog.records]
    assert any("skipped 2 malformed rows" in m and "train.jsonl" in m for m in msgs), msgs
    (m,) = read_metrics(str(tmp_path / "run"))
    assert m["data/rows_read"] == 6 and m["data/rows_kept"] == 4 and m["data/rows_skipped"] == 2


def test_duplicate_ids_are_detected_at_the_trainer(tmp_path, no_model):
    # repeats are a policy (data.duplicates: keep by default, drop, error: issue #21); under "error"
    # the first repeat stops the run before any model is built, naming its file and line
    path = _jsonl(tmp_path / "train.jsonl", GOOD + [dict(GOOD[0], question="Another question?")])
    c = _file_config(tmp_path, path)
    c.data.duplicates = "error"
    with pytest.raises(Exception, match=r"train\.jsonl:5: duplicate question id 'q0'"):
        Trainer(c)


def test_empty_demonstration_rejected_for_sft_at_the_trainer(tmp_path, no_model):
    rows = [dict(r, demonstration=f"so \\boxed{{{r['answer']}}}") for r in GOOD]
    rows[1]["demonstration"] = "  "
    c = shrink(sft.get_config(), tmp_path / "run", steps=1)
    c.data.source, c.data.path = "file", _jsonl(tmp_path / "sft.jsonl", rows)
    with pytest.raises(Exception, match=r"sft\.jsonl:2: empty 'demonstration'"):
        Trainer(c)
