"""Multi-host stand-in: two local processes joined by ``jax.distributed`` (CPU, gloo).

Each process has 2 simulated CPU devices; together they form the 2 (data) × 2 (tensor) mesh.
``upt train`` runs two HPT steps (sampling, verifying, gating, a sharded update with a non-zero
gradient: the untrained model fails, so demonstrations are trained on; checkpoint), a second pair of
processes resumes to step 3, and everything must agree with one process on 4 devices running the
same 3 steps: the per-step metrics and the final parameters. Then SIGTERM reaches one process only
(the other never sees it): both stop after the same step, save that step and exit 0.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from .test_trainer import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 240

CONFIG = textwrap.dedent(f"""\
    from experiments import hpt

    def get_config():
        c = hpt.get_config()
        c.model.overrides = {TINY!r}
        c.data.tiers = ("add_2",)
        c.data.n_per_tier = 64
        c.train.questions_per_step = 2
        c.rollout.n = 2
        c.rollout.max_new_tokens = 8
        c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 2, 1, -1
        c.checkpoint.every = 1
        c.log.progress = False
        return c
    """)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int, **extra) -> dict:
    env = dict(os.environ)
    for k in ("UPT_COORDINATOR", "UPT_NUM_PROCESSES", "UPT_PROCESS_ID", "UPT_DISTRIBUTED"):
        env.pop(k, None)
    env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""),
        **extra,
    )
    # no persistent compilation cache: a process loading an executable its peer compiled afresh
    # can disagree with it on the gloo collectives (seen as a size mismatch abort)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    return env


def _run(config_file, jobs, log_dir, extra=(), during=None):
    """Start ``upt train`` jobs side by side and wait for all of them.

    ``jobs``: ``[(run_dir, steps, processes, devices_per_process)]``; a job with several
    processes joins them on a fresh localhost port. ``extra``: more arguments for every process;
    ``during(procs)``: called once all are started (to signal one). Returns each job's list of
    process outputs. Every child is killed if anything fails or runs past ``TIMEOUT_S``.
    """
    procs, logs, owner = [], [], []
    try:
        for j, (run_dir, steps, processes, devices) in enumerate(jobs):
            args = [
                sys.executable,
                "-m",
                "upt_jax.cli",
                "train",
                "--config",
                str(config_file),
                f"--config.run_dir={run_dir}",
                f"--config.train.steps={steps}",
                *extra,
            ]
            port = _free_port()
            for i in range(processes):
                extra = (
                    {}
                    if processes == 1
                    else dict(
                        UPT_COORDINATOR=f"127.0.0.1:{port}", UPT_NUM_PROCESSES=str(processes), UPT_PROCESS_ID=str(i)
                    )
                )
                log = open(os.path.join(log_dir, f"job{j}-steps{steps}-p{i}of{processes}.log"), "w+")
                logs.append(log)
                owner.append(j)
                procs.append(
                    subprocess.Popen(args, cwd=ROOT, env=_env(devices, **extra), stdout=log, stderr=subprocess.STDOUT)
                )
        if during is not None:
            during(procs)
        deadline = time.monotonic() + TIMEOUT_S
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        outs = [[] for _ in jobs]
        for p, log, j in zip(procs, logs, owner):
            log.seek(0)
            outs[j].append(log.read())
            assert p.returncode == 0, f"job {jobs[j]}: a process exited with {p.returncode}:\n{outs[j][-1][-4000:]}"
        return outs
    except subprocess.TimeoutExpired:
        tails = []
        for log in logs:
            log.seek(0)
            tails.append(log.read()[-2000:])
        pytest.fail(f"the runs did not finish in {TIMEOUT_S}s:\n" + "\n---\n".join(tails))
    finally:
        for p in procs:  # never leave a child behind (one waiting on a dead peer would hang)
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()


def _saved_state(step_dir):
    """The saved ``TrainState`` of a step as numpy arrays (whatever mesh wrote it)."""
    import orbax.checkpoint as ocp

    with ocp.PyTreeCheckpointer() as c:
        tree = c.metadata(step_dir / "state").item_metadata.tree
        args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return c.restore(step_dir / "state", restore_args=args)


def _metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_two_processes_train_checkpoint_resume_and_match_one_process(tmp_path):
    config_file = tmp_path / "tiny_hpt.py"
    config_file.write_text(CONFIG)
    multi, single = tmp_path / "multi", tmp_path / "single"

    # two processes × 2 devices for 2 steps, next to the one-process reference (4 devices, 3 steps)
    first, _ = _run(config_file, [(multi, 2, 2, 2), (single, 3, 1, 4)], tmp_path)
    assert all('"steps_run": 2' in out for out in first), first
    assert sorted(os.listdir(multi / "checkpoints"))[-1] == "2"
    (second,) = _run(config_file, [(multi, 3, 2, 2)], tmp_path)  # new processes resume the run dir
    assert all('"steps_run": 1' in out for out in second), "the resumed run must continue at step 3"
    assert "resumed" in second[0]

    m_multi, m_single = _metrics(multi), _metrics(single)
    assert [m["step"] for m in m_multi] == [1, 2, 3]  # process 0 alone wrote the log
    assert all(m["grad_norm"] > 0 and m["skipped"] == 0 for m in m_multi)  # the parameters moved
    for a, b in zip(m_multi, m_single):
        assert a["reward/mean"] == b["reward/mean"] and a["gate/sft_frac"] == b["gate/sft_frac"]
        np.testing.assert_allclose([a["loss"], a["grad_norm"]], [b["loss"], b["grad_norm"]], rtol=1e-5, atol=1e-7)

    a, b = _saved_state(multi / "checkpoints" / "3"), _saved_state(single / "checkpoints" / "3")
    assert int(a["step"]) == int(b["step"]) == 3
    leaves_a, leaves_b = jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"])
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)

    # preemption: SIGTERM to process 1 only, mid-run; saves only when stopped (checkpoint.every=100)
    def sigterm_process_1(procs):
        deadline = time.monotonic() + TIMEOUT_S
        while len(_metrics(multi)) < 4:  # step 4: the resumed processes are training
            assert all(p.poll() is None for p in procs) and time.monotonic() < deadline, "no step 4"
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGTERM)

    (third,) = _run(
        config_file, [(multi, 8, 2, 2)], tmp_path, extra=["--config.checkpoint.every=100"], during=sigterm_process_1
    )
    stops = [re.findall(r"stopped by SIGTERM at step (\d+); checkpoint saved", out) for out in third]
    assert all(len(s) == 1 for s in stops), third
    (p0,), (p1,) = stops
    assert p0 == p1, f"the processes stopped after different steps: {p0}, {p1}"
    stopped = int(p0)
    assert 4 <= stopped < 8 and all('"stopped": {"signal": "SIGTERM"' in out for out in third)
    assert stopped in {int(d) for d in os.listdir(multi / "checkpoints") if d.isdigit()}
    assert [m["step"] for m in _metrics(multi)] == list(range(1, stopped + 1))
