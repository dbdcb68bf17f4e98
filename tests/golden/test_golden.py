"""The golden run (issue #19) reproduces: SFT, GRPO, HPT (soft gate), DPO, a reward model and PPO
(critic, learned reward), 3 steps each, rerun in a subprocess (one CPU device, one CPU: see
`tests.golden.record`) and compared with ``tests/golden/golden.json``: bitwise on the recorded
host fingerprint, within tolerances elsewhere. A failure here after a change that was not meant to
alter results is a regression; after one that was, regenerate (``python -m tests.golden.record``)
and say why in the commit."""

import json
import os
import subprocess
import sys
import warnings

import pytest

from tests.golden.record import GOLDEN_JSON, compare, fingerprint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_golden_run_reproduces(tmp_path):
    out = tmp_path / "now.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.golden.record", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"the golden run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    with open(GOLDEN_JSON) as f:
        recorded = json.load(f)
    with open(out) as f:
        now = json.load(f)
    mode, problems, notes = compare(recorded, now)
    how = (
        "bitwise: this host's fingerprint is the recorded one"
        if mode == "bitwise"
        else f"within tolerances: host fingerprint {fingerprint(now['host'])} is not the recorded "
        f"{fingerprint(recorded['host'])}"
    )
    print(f"golden run compared {how}; {len(problems)} differences", *notes, sep="\n")
    if mode != "bitwise":
        warnings.warn(f"golden run compared {how}", UserWarning)
    more = f"\n… {len(problems) - 40} more" if len(problems) > 40 else ""
    assert not problems, (
        f"the golden run differs from tests/golden/golden.json (compared {how}):\n" + "\n".join(problems[:40]) + more
    )


# ----------------------------------------------------------------------------- compare itself
def _doc(**host):
    h = {
        "isa_flags": ["avx2", "avx512f"],
        "jax": "0.10.2",
        "jaxlib": "0.10.2",
        "XLA_FLAGS": "x",
        "ran_on_one_cpu": True,
    }
    h.update(host)
    leaf = {"shape": [2], "dtype": "float32", "sum": 1.0, "sumsq": 0.5, "sha256": "ab"}
    return {"host": h, "regimes": {"sft": {"metrics": [{"step": 1, "loss": 0.5}], "params": {"w": dict(leaf)}}}}


def test_compare_is_bitwise_on_the_recorded_host_and_tolerant_elsewhere():
    rec = _doc()
    mode, problems, _ = compare(rec, _doc())
    assert (mode, problems) == ("bitwise", [])
    now = _doc()
    now["regimes"]["sft"]["metrics"][0]["loss"] = 0.5 * (1 + 1e-7)
    now["regimes"]["sft"]["params"]["w"].update(sha256="cd", sum=1.0 + 1e-9)
    mode, problems, _ = compare(rec, now)
    assert mode == "bitwise" and len(problems) == 2 and "loss" in problems[0] and "sha256" in problems[1]
    now["host"]["isa_flags"] = ["avx2"]  # an AVX2-only host: the same drift is within tolerance
    mode, problems, _ = compare(rec, now)
    assert (mode, problems) == ("tolerance", [])
    now["regimes"]["sft"]["params"]["w"]["sumsq"] = 0.51
    now["regimes"]["sft"]["metrics"][0]["extra"] = 1.0
    del now["regimes"]["sft"]["metrics"][0]["loss"]
    mode, problems, notes = compare(rec, now)
    assert mode == "tolerance" and len(problems) == 2 and notes and "extra" in notes[0]


@pytest.mark.parametrize("host", [{"jax": "0.10.3"}, {"jaxlib": "0.10.3"}])
def test_compare_needs_the_same_jax_for_bitwise(host):
    assert compare(_doc(), _doc(**host))[0] == "tolerance"


def test_compare_gives_the_key_projection_bias_its_own_tolerance_off_the_recorded_host():
    """The key bias's gradient is a near-cancellation (only RoPE's part survives softmax): another
    host's rounding moved the reward model's by 2e-4 relative; a wrong update moves it by far more."""
    leaf = "backbone/layers/0/self_attn/k_proj/bias/value"
    rec, now = _doc(), _doc(isa_flags=["avx2"])
    for doc in (rec, now):
        doc["regimes"]["sft"]["params"][leaf] = dict(doc["regimes"]["sft"]["params"]["w"])
    now["regimes"]["sft"]["params"][leaf]["sumsq"] = 0.5 * (1 + 2e-4)
    assert compare(rec, now) == ("tolerance", [], [])
    now["regimes"]["sft"]["params"]["w"]["sumsq"] = 0.5 * (1 + 2e-4)  # any other leaf: 1e-4
    assert [p.split(":")[0] for p in compare(rec, now)[1]] == ["sft params w"]
    now["regimes"]["sft"]["params"]["w"]["sumsq"] = 0.5
    now["regimes"]["sft"]["params"][leaf]["sumsq"] = 0.5 * 1.05
    assert len(compare(rec, now)[1]) == 1
    now["host"] = rec["host"]  # on the recorded host: bitwise, every leaf alike
    now["regimes"]["sft"]["params"][leaf].update(sumsq=0.5, sha256="cd")
    assert compare(rec, now)[:2] == ("bitwise", [f"sft params {leaf}: sha256 differs (sum 1.0, recorded 1.0)"])


def test_compare_tolerates_a_sum_that_cancels_at_the_leafs_scale():
    rec, now = _doc(), _doc(isa_flags=["avx2"])
    rec["regimes"]["sft"]["params"]["w"]["sum"] = 0.0  # e.g. [0.5, -0.5]
    now["regimes"]["sft"]["params"]["w"]["sum"] = 1e-9
    assert compare(rec, now) == ("tolerance", [], [])
    now["regimes"]["sft"]["params"]["w"]["sum"] = 1e-3
    assert len(compare(rec, now)[1]) == 1


def test_regimes_that_sample_are_compared_on_the_recorded_host_only():
    rec, now = _doc(), _doc(isa_flags=["avx2"])
    rec["regimes"]["grpo"] = json.loads(json.dumps(rec["regimes"]["sft"]))
    now["regimes"]["grpo"] = json.loads(json.dumps(now["regimes"]["sft"]))
    now["regimes"]["grpo"]["metrics"][0]["loss"] = 0.9  # a flipped token changes everything after it
    mode, problems, notes = compare(rec, now)
    assert mode == "tolerance" and problems == [] and any("grpo" in n for n in notes)
    mode, problems, _ = compare(rec, json.loads(json.dumps(dict(now, host=rec["host"]))))
    assert mode == "bitwise" and any("grpo" in p for p in problems)
