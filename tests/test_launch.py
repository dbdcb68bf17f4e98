"""launch/: argument handling through the scripts' --dry-run (nothing is created or submitted)."""

import os
import shlex
import subprocess

import pytest

from upt_jax.train import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU = os.path.join(ROOT, "launch", "tpu_vm.sh")
SLURM = os.path.join(ROOT, "launch", "slurm_gpu.sh")
SBATCH = os.path.join(ROOT, "launch", "slurm_gpu.sbatch")


def run(script, *args):
    p = subprocess.run(["bash", script, *args], capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def commands(stdout):
    """The printed commands (``+ cmd args``) as argument lists."""
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def remote(cmd):
    """The shell command a ``gcloud ... ssh --command=...`` runs on the workers, split."""
    (c,) = [a for a in cmd if a.startswith("--command=")]
    return c[len("--command=") :]


TPU_ARGS = ["--name", "upt-v5e", "--zone", "us-west4-a", "--dry-run"]


def test_tpu_vm_all_prints_create_setup_run_logs():
    rc, out, err = run(
        TPU,
        "all",
        *TPU_ARGS,
        "--accelerator-type",
        "v5litepod-16",
        "--project",
        "proj",
        "--config",
        "experiments/grpo.py",
        "--run-dir",
        "gs://bucket/runs/grpo",
        "--",
        "--config.mesh.fsdp=16",
        "--config.name=it's a test",
    )
    assert rc == 0, err
    cmds = commands(out)
    create, archive, scp, install, start, logs = cmds
    assert create[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"] and "upt-v5e" in create
    assert {"--zone=us-west4-a", "--project=proj", "--accelerator-type=v5litepod-16"} <= set(create)
    assert archive[0] == "git" and "archive" in archive
    assert scp[4] == "scp" and "--worker=all" in scp and "--zone=us-west4-a" in scp
    assert "--worker=all" in install and "pip install" in remote(install) and "jax[tpu]" in remote(install)
    assert start[4] == "ssh" and "--worker=all" in start
    # the command every worker runs, with the user's arguments intact (quotes and spaces)
    on_worker = shlex.split(remote(start).split("&&", 1)[1])
    assert on_worker[0] == "UPT_DISTRIBUTED=1"
    i = on_worker.index("upt_jax.cli")
    assert on_worker[i + 1 : i + 7] == [
        "train",
        "--config",
        "experiments/grpo.py",
        "--config.run_dir=gs://bucket/runs/grpo",
        "--config.mesh.fsdp=16",
        "--config.name=it's a test",
    ]
    assert "--worker=0" in logs and "tail" in remote(logs)


def test_tpu_vm_single_actions():
    rc, out, _ = run(TPU, "logs", *TPU_ARGS, "--worker", "3")
    assert rc == 0 and "--worker=3" in commands(out)[0]
    rc, out, _ = run(TPU, "stop", *TPU_ARGS)
    (stop,) = commands(out)
    assert "--worker=all" in stop and "kill" in remote(stop)
    rc, out, _ = run(TPU, "delete", *TPU_ARGS)
    (delete,) = commands(out)
    assert delete[4] == "delete" and "upt-v5e" in delete and "--quiet" in delete
    rc, out, _ = run(TPU, "create", *TPU_ARGS, "--accelerator-type", "v4-32", "--spot")
    assert "--spot" in commands(out)[0] and "--accelerator-type=v4-32" in commands(out)[0]


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "missing command"),
        (["launch", "--name", "x", "--zone", "z"], "unknown command"),
        (["run", "--zone", "z", "--config", "c.py", "--run-dir", "gs://b/r"], "--name is required"),
        (["run", "--name", "x", "--config", "c.py", "--run-dir", "gs://b/r"], "--zone is required"),
        (["create", "--name", "x", "--zone", "z"], "--accelerator-type is required"),
        (["run", "--name", "x", "--zone", "z", "--run-dir", "gs://b/r"], "--config is required"),
        (["run", "--name", "x", "--zone", "z", "--config", "c.py"], "--run-dir is required"),
        (
            ["run", "--name", "x", "--zone", "z", "--config", "c.py", "--run-dir", "gs://b", "--entry", "eval"],
            "--entry must be train or pipeline",
        ),
        (["stop", "--name", "x", "--zone"], "--zone needs a value"),
        (["stop", "--name", "x", "--zone", "z", "--bogus"], "unknown option '--bogus'"),
    ],
)
def test_tpu_vm_argument_errors(args, message):
    rc, out, err = run(TPU, *args, "--dry-run")
    assert rc == 2 and message in err and not commands(out)


def test_slurm_dry_run_prints_sbatch_and_srun():
    rc, out, err = run(
        SLURM,
        "--nodes",
        "4",
        "--gpus-per-node",
        "8",
        "--partition",
        "gpu",
        "--account",
        "acct",
        "--config",
        "experiments/hpt.py",
        "--run-dir",
        "/shared/runs/hpt",
        "--venv",
        "/sw/venv",
        "--dry-run",
        "--",
        "--config.mesh.fsdp=32",
        "--config.name=a b",
    )
    assert rc == 0, err
    sbatch, srun = commands(out)
    assert sbatch[0] == "sbatch" and {
        "--nodes=4",
        "--gpus-per-node=8",
        "--partition=gpu",
        "--account=acct",
        "--ntasks-per-node=1",
    } <= set(sbatch)
    assert sbatch[sbatch.index("--config") + 1] == "experiments/hpt.py" and sbatch[-2:] == [
        "--config.mesh.fsdp=32",
        "--config.name=a b",
    ]
    assert srun[0] == "srun" and "/sw/venv/bin/python" in srun
    i = srun.index("upt_jax.cli")
    assert srun[i + 1 :] == [
        "train",
        "--config",
        "experiments/hpt.py",
        "--config.run_dir=/shared/runs/hpt",
        "--config.mesh.fsdp=32",
        "--config.name=a b",
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config", "c.py", "--run-dir", "r"], "--nodes is required"),
        (["--nodes", "0", "--config", "c.py", "--run-dir", "r"], "--nodes must be a positive integer"),
        (["--nodes", "2", "--run-dir", "r"], "--config is required"),
        (["--nodes", "2", "--config", "c.py"], "--run-dir is required"),
        (["--nodes", "2", "--config", "c.py", "--run-dir", "r", "--gpus-per-node", "x"], "--gpus-per-node must be"),
    ],
)
def test_slurm_argument_errors(args, message):
    rc, out, err = run(SLURM, *args, "--dry-run")
    assert rc == 2 and message in err and not commands(out)


def test_sbatch_script_dry_run_and_outside_slurm():
    rc, out, _ = run(SBATCH, "--dry-run", "--config", "c.py", "--run-dir", "r", "--entry", "pipeline")
    assert rc == 0 and commands(out)[0][-4:] == ["pipeline", "--config", "c.py", "--config.run_dir=r"]
    rc, _, err = run(SBATCH, "--config", "c.py", "--run-dir", "r")
    assert rc == 2 and "not inside a SLURM job" in err
    rc, _, err = run(SBATCH, "--dry-run", "--run-dir", "r")
    assert rc == 2 and "--config is required" in err


# ----------------------------------------------------------------------------- the one code path
@pytest.mark.parametrize(
    "env, method",
    [
        ({}, "single"),
        ({"UPT_DISTRIBUTED": "0", "SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, "single"),
        ({"UPT_COORDINATOR": "10.0.0.1:1234", "UPT_NUM_PROCESSES": "2", "UPT_PROCESS_ID": "1"}, "explicit"),
        ({"UPT_COORDINATOR": "h:1", "UPT_NUM_PROCESSES": "1", "UPT_PROCESS_ID": "0"}, "single"),
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, "slurm"),
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, "single"),
        ({"TPU_WORKER_HOSTNAMES": "w0,w1,w2,w3"}, "tpu"),
        ({"TPU_WORKER_HOSTNAMES": "w0"}, "single"),
        ({"UPT_DISTRIBUTED": "1"}, "auto"),
    ],
)
def test_distributed_detect(env, method):
    got, kw = distributed.detect(env)
    assert got == method
    if method == "explicit":
        assert kw == dict(coordinator_address="10.0.0.1:1234", num_processes=2, process_id=1)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"UPT_COORDINATOR": "h:1"}, "UPT_NUM_PROCESSES, UPT_PROCESS_ID not set"),
        ({"UPT_COORDINATOR": "h:1", "UPT_NUM_PROCESSES": "2", "UPT_PROCESS_ID": "2"}, "must be in"),
        ({"UPT_COORDINATOR": "h", "UPT_NUM_PROCESSES": "2", "UPT_PROCESS_ID": "0"}, "host:port"),
        ({"UPT_DISTRIBUTED": "maybe"}, "UPT_DISTRIBUTED"),
    ],
)
def test_distributed_detect_errors(env, message):
    with pytest.raises(ValueError, match=message):
        distributed.detect(env)


def test_initialize_single_process_is_a_no_op():
    info = distributed.initialize({})
    assert info == distributed.DistributedInfo("single", 0, 1, False)
