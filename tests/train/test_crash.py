"""What survives a failure: SIGKILL at random points (mid-step, mid-checkpoint-write), SIGTERM and
SIGINT (preemption, Ctrl-C: save and exit 0), a checkpoint write that fails on a full disk, a
corrupted latest checkpoint, and a run of non-finite updates. Every crashed, stopped or damaged run
must finish with bitwise the parameters of an uninterrupted run.

The crash tests run ``python -m upt_jax.cli train`` in subprocesses (a SIGKILL is a real process
death: no ``finally``, no flush, no Orbax finalisation). Every child of a test gets the same
explicit ``XLA_FLAGS``, so the runs being compared compile the same programs: one CPU device in
``make test`` (the fastest to start), 8 simulated devices with a 2-way data mesh (sharded arrays,
sharded async saves) in the ``slow`` variant.

Why LUFFY on ``experiments/grpo.py``: plain GRPO on an untrained tiny model earns no reward, so
every advantage is 0 and the parameters never move — a bitwise comparison would prove nothing.
LUFFY adds each question's demonstration to its group (advantages over the union), so every step
moves the parameters by an amount that depends on the sampled rollouts, the data order, the
optimiser state and the step's PRNG key: all of which resume must restore.
"""

import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from experiments import grpo
from upt_jax.train.checkpoint import TMP_SUFFIX, Checkpointer, abstract_with_shardings, restore_params
from upt_jax.train.trainer import NonFiniteError, Trainer, build_model

ROOT = Path(__file__).resolve().parents[2]
STEPS = 10
WAIT_S = 240  # a child that makes no progress for this long fails the test instead of hanging it


def _argv(run_dir, steps, devices):
    return [
        sys.executable,
        "-m",
        "upt_jax.cli",
        "train",
        "--config",
        "experiments/grpo.py",
        "--config.recipe.name=luffy",
        f"--config.run_dir={run_dir}",
        "--config.model.overrides.num_layers=1",
        "--config.data.tiers=('add_2',)",
        "--config.data.n_per_tier=64",
        f"--config.train.steps={steps}",
        "--config.train.questions_per_step=2",
        "--config.rollout.n=3",
        "--config.rollout.max_new_tokens=8",
        f"--config.mesh.data={min(devices, 2)}",
        "--config.mesh.fsdp=1",
        "--config.mesh.tensor=-1",
        "--config.checkpoint.every=1",
        "--config.checkpoint.keep=2",
        "--config.checkpoint.async_save=True",
        "--config.log.progress=False",
    ]


def _env(devices):
    env = dict(os.environ)
    env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        PYTHONHASHSEED="0",
    )
    return env


class Child:
    """One ``upt train`` process; its output goes to a log file (a full pipe would block it).
    ``extra``: more ``--config.KEY=VALUE`` arguments; ``prelude``: Python run in the child before
    the command line (fault injection)."""

    def __init__(self, run_dir, steps, log_path, devices, extra=(), prelude=None):
        self.run_dir, self.log_path = Path(run_dir), Path(log_path)
        self._log = open(log_path, "w")
        argv = _argv(run_dir, steps, devices) + list(extra)
        if prelude is not None:  # python -c: the working directory (ROOT) is on sys.path, as for -m
            argv[1:3] = ["-c", prelude + "\nimport sys\nfrom upt_jax.cli import main\nsys.exit(main(sys.argv[1:]))"]
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=_env(devices), stdout=self._log, stderr=subprocess.STDOUT)

    def wait(self, timeout=WAIT_S):
        try:
            rc = self.proc.wait(timeout)
        finally:
            self._log.close()
        return rc

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        rc = self.wait()
        assert rc == -signal.SIGKILL, f"the child was not killed (exit {rc}):\n{self.output()[-3000:]}"

    def alive(self):
        return self.proc.poll() is None

    def output(self):
        return self.log_path.read_text(errors="replace")

    def finish(self):
        rc = self.wait()
        assert rc == 0, f"upt train failed (exit {rc}):\n{self.output()[-4000:]}"


def _metric_lines(run_dir):
    try:
        with open(Path(run_dir) / "metrics.jsonl") as f:
            return sum(1 for line in f if line.endswith("\n"))
    except FileNotFoundError:
        return 0


def _listing(run_dir):
    try:
        return os.listdir(Path(run_dir) / "checkpoints")
    except FileNotFoundError:
        return []


def _committed(run_dir):
    return sorted(int(p) for p in _listing(run_dir) if p.isdigit())


def _tmp_dirs(run_dir):
    return [p for p in _listing(run_dir) if TMP_SUFFIX in p]


def _wait_for(child, cond, what, poll_s=0.002):
    deadline = time.monotonic() + WAIT_S
    while not cond():
        if not child.alive():
            pytest.fail(f"the run ended before {what} (exit {child.proc.returncode}):\n{child.output()[-3000:]}")
        if time.monotonic() > deadline:
            child.proc.kill()
            pytest.fail(f"timed out waiting for {what}:\n{child.output()[-3000:]}")
        time.sleep(poll_s)


def _abstract_params():
    from upt_jax.data import char_tokenizer

    c = grpo.get_config()
    c.model.overrides.num_layers = 1
    model = build_model(c.model, vocab_size=char_tokenizer().vocab_size)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.state(model))


def _params(run_dir, step=None):
    return restore_params(Path(run_dir) / "checkpoints", _abstract_params(), step=step)


def _assert_bitwise_equal(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


def _metrics(run_dir):
    with open(Path(run_dir) / "metrics.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def _assert_same_run(run_dir, ref_dir, steps):
    """Bitwise the same final parameters, the same steps logged once each with the same losses,
    and parameters that actually moved (so the comparison is not vacuous)."""
    _assert_bitwise_equal(_params(ref_dir), _params(run_dir))
    got, want = _metrics(run_dir), _metrics(ref_dir)
    assert [m["step"] for m in got] == [m["step"] for m in want] == list(range(1, steps + 1))
    assert [m["loss"] for m in got] == [m["loss"] for m in want]
    assert all(m["skipped"] == 0 and m["grad_norm"] > 0 for m in want)
    before, last = _params(ref_dir, steps - 1), _params(ref_dir)
    assert any(np.any(np.asarray(x) != np.asarray(y)) for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(last)))


DEVICES = [1, pytest.param(8, marks=pytest.mark.slow)]


@pytest.mark.parametrize("devices", DEVICES)
def test_sigkill_at_random_points_then_resume_is_bitwise_identical(tmp_path, devices):
    """SIGKILL ``upt train`` mid-checkpoint-write and mid-step (seeded random step and delay; the
    slow variant also at a random moment), rerunning the same command after each: the final
    parameters equal an uninterrupted run's, bitwise."""
    rng = random.Random(1234)
    ref = Child(tmp_path / "ref", STEPS, tmp_path / "ref.log", devices)  # runs alongside the crashing one
    run = tmp_path / "crash"
    kills, mid_write = [], 0
    # make test (1 device): two kills; the slow 8-device variant adds a kill at a random moment
    plan = ["checkpoint", "step"] + (["random"] if devices > 1 else [])
    attempt = 0
    while plan:
        kind = plan.pop(0)
        attempt += 1
        child = Child(run, STEPS, tmp_path / f"crash{attempt}.log", devices)
        start_lines = _metric_lines(run)
        if kind == "checkpoint":
            # an asynchronous save in flight: its temporary directory exists (after one commit,
            # so that the resumed run has something to fall back to)
            _wait_for(
                child,
                lambda: _committed(run) and _tmp_dirs(run) and _metric_lines(run) > start_lines,
                "an asynchronous checkpoint write",
            )
            child.kill()
            left = _tmp_dirs(run)
            kills.append((kind, _metric_lines(run), left))
            if left:
                mid_write += 1
            elif attempt < 6:  # the save committed between our look and the kill: try again
                plan.insert(0, "checkpoint")
        elif kind == "step":
            target = start_lines + rng.randint(1, 2)
            _wait_for(child, lambda: _metric_lines(run) >= target, f"step {target}")
            time.sleep(rng.uniform(0.05, 0.25))  # inside the next step (a step takes ~0.3 s)
            child.kill()
            kills.append((kind, _metric_lines(run), _tmp_dirs(run)))
        else:
            _wait_for(child, lambda: _metric_lines(run) > start_lines, "a new step")
            time.sleep(rng.uniform(0.0, 0.6))
            child.kill()
            kills.append((kind, _metric_lines(run), _tmp_dirs(run)))
        assert _metric_lines(run) < STEPS, f"killed too late to matter: {kills}"
    final = Child(run, STEPS, tmp_path / "final.log", devices)
    final.finish()
    ref.finish()
    assert mid_write >= 1, f"no kill landed inside an asynchronous checkpoint write: {kills}"
    logs = [p.read_text(errors="replace") for p in sorted(tmp_path.glob("crash*.log"))] + [final.output()]
    assert any("incomplete save" in text for text in logs), "a killed save must be reported on resume"
    assert sum("resumed" in text for text in logs) >= len(kills)
    assert not _tmp_dirs(run)
    _assert_same_run(run, tmp_path / "ref", STEPS)


def _stopped_at(child, name) -> int:
    """The step ``upt train`` reported saving when it stopped on signal ``name``."""
    found = re.findall(rf"stopped by {name} at step (\d+); checkpoint saved; rerun the same command", child.output())
    assert len(found) == 1, f"no single stop line for {name}:\n{child.output()[-3000:]}"
    return int(found[0])


@pytest.mark.parametrize("devices", DEVICES)
def test_sigterm_and_sigint_save_the_step_reached_exit_0_and_resume_bitwise(tmp_path, devices):
    """SIGTERM (preemption) or SIGINT (Ctrl-C) to ``upt train`` while the trainer is being built,
    during the first step's XLA compile, and mid-run: each run exits 0 after saving the step it
    reached (``checkpoint.every=4``: the stop's own save is what keeps the other steps), with one
    line saying so; rerunning the same command resumes, and the last run ends with bitwise the
    parameters (and per-step losses) of an uninterrupted run."""
    rng = random.Random(4321)
    every = ["--config.checkpoint.every=4"]
    ref = Child(tmp_path / "ref", STEPS, tmp_path / "ref.log", devices)  # saves every step: any is comparable
    run = tmp_path / "stop"

    # 1. while the trainer is being built (its run directory exists, nothing compiled yet)
    child = Child(run, STEPS, tmp_path / "stop1.log", devices, every)
    _wait_for(child, run.is_dir, "the run directory")
    child.proc.send_signal(signal.SIGTERM)
    child.finish()
    assert "stopped by SIGTERM before the first step; nothing to save" in child.output(), child.output()[-3000:]
    assert _committed(run) == [] and _metric_lines(run) == 0

    # 2. during the first step, which is mostly XLA compiling (Ctrl-C once segfaulted there)
    (run / "config.json").unlink()  # run 1 wrote it; the new child writes it again when it is built
    child = Child(run, STEPS, tmp_path / "stop2.log", devices, every)
    _wait_for(child, (run / "config.json").exists, "the trainer to be built")  # written last in __init__
    time.sleep(0.3)
    assert _metric_lines(run) == 0, "the first step finished too soon to be stopped while compiling"
    child.proc.send_signal(signal.SIGINT)
    child.finish()
    stopped = _stopped_at(child, "SIGINT")
    assert stopped == _metric_lines(run) == 1 and _committed(run) == [1]

    # 3. mid-run, between or inside steps
    child = Child(run, STEPS, tmp_path / "stop3.log", devices, every)
    _wait_for(child, lambda: _metric_lines(run) >= stopped + 2, f"step {stopped + 2}")
    time.sleep(rng.uniform(0.0, 0.3))
    child.proc.send_signal(signal.SIGTERM)
    child.finish()
    stopped = _stopped_at(child, "SIGTERM")
    assert stopped == _metric_lines(run) < STEPS and _committed(run)[-1] == stopped
    assert "at step 1" in child.output()  # resumed from the step the SIGINT saved

    final = Child(run, STEPS, tmp_path / "final.log", devices, every)
    final.finish()
    ref.finish()
    assert f"at step {stopped}" in final.output()
    for log in tmp_path.glob("stop*.log"):
        text = log.read_text(errors="replace")
        assert "Traceback" not in text and "Segmentation" not in text, text[-3000:]
    _assert_same_run(run, tmp_path / "ref", STEPS)


# a full disk in the background save: the manifest (the last file a save writes, from Orbax's
# commit thread) fails with ENOSPC for step 3, half written; no root or small file system needed
ENOSPC = """
import errno
from upt_jax.train import checkpoint
_write = checkpoint.write_manifest
def full_disk(step_dir, step):
    if step == 3:
        with open(f"{step_dir}/upt_manifest.json.tmp", "w") as f:
            f.write('{"format": 1, "fi')
        raise OSError(errno.ENOSPC, "No space left on device", f"{step_dir}/upt_manifest.json.tmp")
    return _write(step_dir, step)
checkpoint.write_manifest = full_disk
"""


def test_a_save_failing_with_enospc_stops_the_run_with_one_message_and_the_same_command_resumes(tmp_path):
    """A background checkpoint write fails with ENOSPC: ``upt train`` stops at the next step
    (no further step is trained) with exit 1 and one line naming the step, the checkpoint path,
    the error and the free space (no tracebacks); the same command, rerun once the disk has room,
    removes the failed save's temporary directory, resumes from the last committed step and ends
    with bitwise an uninterrupted run's parameters."""
    steps = 6
    ref = Child(tmp_path / "ref", steps, tmp_path / "ref.log", 1)
    run = tmp_path / "full"
    child = Child(run, steps, tmp_path / "full.log", 1, prelude=ENOSPC)
    rc = child.wait()
    out = child.output()
    assert rc == 1, out[-3000:]
    assert "Traceback" not in out and len(out.strip().splitlines()) <= 3, out[-3000:]
    line = next(x for x in out.splitlines() if "saving checkpoint step 3" in x)
    assert line.startswith("upt train: saving checkpoint step 3 in " + str(run / "checkpoints"))
    assert "No space left on device" in line and "MiB free on" in line and "last committed step is 2" in line
    assert _metric_lines(run) <= 4  # step 4 ran while step 3 was written; its own save found the failure
    assert _committed(run) == [1, 2] and _tmp_dirs(run) == ["3" + TMP_SUFFIX]

    again = Child(run, steps, tmp_path / "again.log", 1)
    again.finish()
    ref.finish()
    text = again.output()
    assert f"incomplete save 3{TMP_SUFFIX}" in text and "at step 2" in text, text[-3000:]
    assert not _tmp_dirs(run)
    _assert_same_run(run, tmp_path / "ref", steps)


def _truncate_largest_file(step_dir: Path) -> Path:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
    victim = max(files, key=lambda p: p.stat().st_size)
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    return victim


@pytest.mark.slow  # 47 s end to end; restoring past a damaged step is tests/train/test_checkpoint.py's in make test
@pytest.mark.parametrize("devices", DEVICES)
def test_truncated_latest_checkpoint_is_reported_skipped_and_the_run_still_matches(tmp_path, devices):
    """Truncate a file of the latest checkpoint, rerun ``upt train``: it logs the skip, resumes
    from the previous step and ends with an uninterrupted run's parameters."""
    steps, stop = 4, 3
    ref = Child(tmp_path / "ref", steps, tmp_path / "ref.log", devices)
    first = Child(tmp_path / "run", stop, tmp_path / "first.log", devices)
    first.finish()
    assert _committed(tmp_path / "run") == [stop - 1, stop]
    victim = _truncate_largest_file(tmp_path / "run" / "checkpoints" / str(stop))
    again = Child(tmp_path / "run", steps, tmp_path / "again.log", devices)
    again.finish()
    ref.finish()
    out = again.output()
    assert f"checkpoint step {stop} in" in out and "is unusable" in out and "truncated" in out, out[-3000:]
    assert f"at step {stop - 1}" in out  # "resumed <run> at step 2"
    assert victim.relative_to(tmp_path / "run" / "checkpoints" / str(stop)).as_posix() in out
    assert (tmp_path / "run" / "checkpoints" / f"{stop}.corrupt").is_dir()  # kept for inspection
    _assert_same_run(tmp_path / "run", tmp_path / "ref", steps)


class _NaNAfter:
    """Verifier stand-in: finite 0/1 rewards for the first ``good`` calls, then NaN (as a broken
    reward model would give), which makes the loss non-finite."""

    def __init__(self, good):
        self.good, self.calls = good, 0

    def scores(self, outputs, golds):
        self.calls += 1
        if self.calls > self.good:
            return np.full(len(outputs), np.nan, np.float32)
        return np.asarray([(i + self.calls) % 2 for i in range(len(outputs))], np.float32)

    def metrics(self):
        return {}

    def close(self):
        pass


def test_nonfinite_updates_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path, caplog):
    from tests.train.test_trainer import shrink

    c = shrink(grpo.get_config(), tmp_path / "nan", steps=10)
    c.train.max_nonfinite_in_a_row = 2
    t = Trainer(c)
    t.verifier.close()
    t.verifier = _NaNAfter(good=2)
    try:
        with pytest.raises(NonFiniteError) as err:
            t.run()
        kept = jax.device_get(t.state.params)  # skipped updates leave the parameters alone
        abstract = abstract_with_shardings(t.state, t.shardings)
    finally:
        t.close()
    msg = str(err.value)
    assert "2 updates in a row" in msg and "last at step 4" in msg
    assert "last good checkpoint is step 2" in msg and str(tmp_path / "nan" / "checkpoints") in msg
    rows = _metrics(tmp_path / "nan")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["skipped"] for r in rows] == [0, 0, 1, 1]  # the skips are counted in metrics.jsonl
    assert all(np.isfinite(r["loss"]) for r in rows[:2]) and not any(np.isfinite(r["loss"]) for r in rows[2:])
    with (
        caplog.at_level(logging.WARNING, logger="upt_jax.train.checkpoint"),
        Checkpointer(tmp_path / "nan" / "checkpoints", read_only=True) as ck,
    ):
        assert ck.all_steps() == [1, 2]  # nothing was saved after the first skip
        state, extra = ck.restore(abstract)
    assert not [r for r in caplog.records if "unusable" in r.getMessage()]  # intact
    assert extra["step"] == 2 and int(state.step) == 2
    _assert_bitwise_equal(kept, jax.device_get(state.params))
