"""benchmarks/gpu_check.py (issue #25): the one-GPU check's code path runs on CPU (parity of the
CPU device with itself, bf16 steps, an Orbax round trip; at smoke size also the MFU and roofline)."""

import json

import numpy as np
import pytest

from benchmarks import gpu_check


def test_checks_pass_on_a_micro_model():
    """The three pass/fail checks, fast: each would fail on a wrong gradient, a non-decreasing or
    non-finite bf16 loss, a restored state that differs."""
    p = gpu_check.gradient_parity("tiny", 8, 16, gpu_check.MICRO)
    assert p["ok"] and p["max_rel_err_highest"] <= gpu_check.PARITY_TOL["highest"]
    b = gpu_check.bf16_steps("tiny", 8, 16, 3, gpu_check.MICRO)
    assert b["ok"] and len(b["losses"]) == 3 and np.all(np.isfinite(b["losses"])) and b["losses"][-1] < b["losses"][0]
    o = gpu_check.orbax_round_trip("tiny", gpu_check.MICRO)
    assert o["ok"] and o["leaves"] > 10


@pytest.mark.slow  # ~70 s on a busy 2-core CPU: every section at smoke size (the fast twin: above)
def test_smoke_run_passes_and_reports_every_section(tmp_path):
    out = tmp_path / "check.json"
    r = gpu_check.main(["--smoke", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(r))
    assert r["ok"] and r["parity"]["ok"] and r["bf16"]["ok"] and r["orbax"]["ok"]
    assert r["update"]["tokens_per_s"] > 0 and r["update"]["mfu_measured_peak"] > 0
    assert r["decode"]["decode_tokens_per_s"] > 0 and r["decode"]["fraction_of_roofline"] > 0
    lines = gpu_check.summary(r)
    assert lines[0].endswith(": ok") and len(lines) == 6


def test_a_failed_check_fails_the_run():
    r = {
        "device": "cpu",
        "seconds": 1.0,
        "ok": False,
        "parity": {"ok": False, "max_rel_err_highest": 0.5, "max_rel_err_default": 0.5},
        "bf16": {"ok": True, "steps": 2, "losses": [1.0, 0.5]},
        "orbax": {"ok": True, "leaves": 3, "seconds": 0.1},
        "update": {
            "config": "tiny",
            "dtype": "float32",
            "batch": 4,
            "seq": 32,
            "tokens_per_s": 1.0,
            "mfu_measured_peak": 0.1,
            "mfu_vendor_peak": None,
        },
        "decode": {"config": "tiny", "batch": 2, "decode_tokens_per_s": 1.0, "fraction_of_roofline": 0.1},
        "measured_peak_tflops": 0.1,
        "measured_bandwidth_gbs": 1.0,
    }
    lines = gpu_check.summary(r)
    assert "FAILED" in lines[0] and "FAILED" in lines[1] and "ok" in lines[2]
