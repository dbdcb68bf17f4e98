"""The console of a short `upt train` (issue #18, item 6): upt_jax's own lines and the progress bar,
not Orbax/absl/JAX/transformers chatter; `-v` / `--verbose` brings that back."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BAR = re.compile(r"^[\w-]+:\s+\d+%\|[^|]*\|[^\]]*\]")  # one tqdm frame: "sft:  50%|█████     | 1/2 [...]"


def _env():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for k in ("TRANSFORMERS_VERBOSITY", "TRANSFORMERS_NO_ADVISORY_WARNINGS", "XLA_FLAGS"):  # one device, as a user runs
        env.pop(k, None)
    return env


def _lines_besides_progress_bar(text: str) -> list[str]:
    """Console lines, tqdm frames removed (a frame ends with ``\\r``; a log line may follow it)."""
    out = []
    for line in text.replace("\r", "\n").splitlines():
        while _BAR.match(line):
            line = _BAR.sub("", line, count=1)
        if line.strip():
            out.append(line)
    return out


def test_a_short_run_prints_fewer_than_20_lines_besides_its_progress_bar(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "upt_jax.cli",
        "train",
        "--config",
        "experiments/sft.py",
        "--config.train.steps=2",
        "--config.train.questions_per_step=2",
        "--config.data.n_per_tier=8",
        "--config.model.overrides.num_layers=1",
        "--config.checkpoint.every=1",
        f"--config.run_dir={tmp_path / 'run'}",
    ]
    p = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = _lines_besides_progress_bar(p.stdout + p.stderr)
    assert len(lines) < 20, "\n".join(lines)
    assert not any("absl" in x or "orbax" in x.lower() for x in lines), "\n".join(lines)
    assert '"steps_run": 2' in p.stdout


def test_verbose_brings_library_info_lines_back():
    code = (
        "import logging, sys\n"
        "from upt_jax import cli\n"
        "assert cli.setup_logging(sys.argv[1:]) == ['x']\n"
        "logging.getLogger('absl').info('orbax chatter')\n"
        "logging.getLogger('upt_jax.train.trainer').info('our line')\n"
        "import transformers\n"
        "transformers.utils.logging.get_logger('transformers').warning_advice('PyTorch was not found.')\n"
    )
    quiet, verbose = (
        subprocess.run(
            [sys.executable, "-c", code, *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300
        )
        for args in (["x"], ["--verbose", "x"])
    )
    assert quiet.returncode == 0 and verbose.returncode == 0, quiet.stderr + verbose.stderr
    assert "our line" in quiet.stderr
    assert "orbax chatter" not in quiet.stderr and "PyTorch was not found" not in quiet.stderr
    assert "orbax chatter" in verbose.stderr and "PyTorch was not found" in verbose.stderr
