"""notebooks/: each jupytext notebook executes on CPU and shows what it claims; .py and .ipynb agree."""

import base64
import glob
import os
import re

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB = os.path.join(ROOT, "notebooks")
NAMES = ["01_compose_a_loss", "02_gradient_coefficients", "03_hpt_gate"]


def execute(name, monkeypatch):
    """Run ``notebooks/<name>.py`` in a fresh kernel (cwd: the repository root); returns
    ``(stream text, [PNG bytes])`` of all its outputs."""
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend emits PNGs
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = jupytext.read(os.path.join(NB, f"{name}.py"))
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": ROOT}}).execute()
    text, images = [], []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text.append(out["text"])
            elif "data" in out:
                text.append(out["data"].get("text/plain", ""))
                if "image/png" in out["data"]:
                    images.append(base64.b64decode(out["data"]["image/png"]))
    return "".join(text), images


def test_every_notebook_is_tested_and_paired():
    assert sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(NB, "*.py"))) == NAMES
    assert sorted(os.path.basename(p)[:-6] for p in glob.glob(os.path.join(NB, "*.ipynb"))) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_py_and_ipynb_in_sync(name):
    py = jupytext.read(os.path.join(NB, f"{name}.py"))
    ipynb = jupytext.read(os.path.join(NB, f"{name}.ipynb"))
    assert [(c.cell_type, c.source) for c in py.cells] == [(c.cell_type, c.source) for c in ipynb.cells], (
        f"notebooks/{name}.py and .ipynb differ: run `jupytext --sync notebooks/{name}.py`"
    )
    assert py.metadata["jupytext"]["formats"] == "ipynb,py:percent"


def test_compose_a_loss_gradient_matches_textbook(monkeypatch):
    """Part 1: a composed loss's gradient equals the textbook's. Part 2: a composed recipe with a user's
    part, trained in the kernel and, in a child process, SIGKILLed after a checkpoint and resumed by
    ``upt train``: the same final parameters (bitwise) and losses."""
    text, _ = execute("01_compose_a_loss", monkeypatch)
    diff = float(re.search(r"max \|grad difference\| = (\S+)", text).group(1))
    assert diff < 1e-6
    norm = float(re.search(r"gradient norm (\S+);", text).group(1))
    assert norm > 1e-3  # a real gradient, not zero = zero
    clipped = int(re.search(r"outside \[0.8, 1.28\]: (\d+)", text).group(1))
    assert clipped > 0  # the clip is exercised
    # part 2: the composed recipe (with a part from the user's module) trained, SIGKILLed, resumed
    assert '"import": "my_parts:rloo_brevity"' in text  # recorded by import path, outside upt_jax
    steps = re.findall(r"^step (\d+): loss \S+ .*grad norm (\S+)$", text, re.M)
    total = len(steps)
    assert [int(s) for s, _ in steps] == list(range(1, total + 1)) and total >= 3
    assert all(float(g) > 0 for _, g in steps)  # the parameters move every step
    killed, of = map(int, re.search(r"killed \(SIGKILL\) with step (\d+) of (\d+) committed", text).groups())
    assert of == total and 1 <= killed < total  # mid-run
    resumed = re.search(r"INFO upt_jax\.train\.trainer: resumed \S+killed at step (\d+)$", text, re.M)
    assert int(resumed.group(1)) == killed
    assert re.search(rf'^upt train: .*"steps_run": {total - killed}, "last": {{"step": {total},', text, re.M)
    assert re.search(rf"^final step: reference {total}, killed and resumed {total}$", text, re.M)
    leaves = int(re.search(r"^parameters bitwise equal: True \((\d+) leaves\)$", text, re.M).group(1))
    assert leaves > 0
    assert re.search(rf"^losses equal: True \({total} steps\)$", text, re.M)


def test_gradient_coefficients_heat_map(monkeypatch):
    text, images = execute("02_gradient_coefficients", monkeypatch)
    assert len(images) == 1 and images[0][:8] == b"\x89PNG\r\n\x1a\n" and len(images[0]) > 10_000
    for name in ("SFT", "GRPO", "LUFFY", "HPT"):
        assert re.search(rf"^{name}.*Σ_t c per row:( [+-]\d\.\d+){{12}}$", text, re.M), name
    assert "q2 pass rate P=0.00 -> SFT on the demo" in text and "q0 pass rate P=0.67 -> RL" in text


def test_hpt_run_reports_gate_decisions(monkeypatch):
    text, images = execute("03_hpt_gate", monkeypatch)
    assert len(images) == 1 and len(images[0]) > 10_000
    steps = re.findall(r"^step (\d+): .*gate fraction to SFT (\S+)", text, re.M)
    assert [int(s) for s, _ in steps] == [1, 2, 3, 4]
    frac = float(re.search(r"gate fraction to SFT over the run: (\S+)", text).group(1))
    assert 0.0 <= frac <= 1.0
    assert frac == pytest.approx(sum(float(f) for _, f in steps) / 4)
