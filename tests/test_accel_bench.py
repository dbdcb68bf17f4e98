"""benchmarks/accel_bench.py (the accelerator targets of issue #8) runs end to end on CPU at a
smoke size and reports consistent numbers; the real run needs a GPU/TPU."""

import json

import pytest

from benchmarks import accel_bench


@pytest.mark.slow  # 23 s: the accelerator benchmark's CPU smoke (make test-slow)
def test_smoke_run_reports_mfu_and_roofline(tmp_path):
    out = tmp_path / "accel.json"
    r = accel_bench.main(
        [
            "--config",
            "tiny",
            "--batch",
            "4",
            "--seq",
            "32",
            "--steps",
            "1",
            "--decode-batch",
            "2",
            "--prompt-len",
            "8",
            "--new-tokens",
            "16",
            "--dtype",
            "float32",
            "--peak-n",
            "256",
            "--bandwidth-mb",
            "16",
            "--json",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(r))
    u, d = r["update"], r["decode"]
    assert u["tokens_per_s"] > 0 and 0 < u["mfu_measured_peak"] and u["mfu_vendor_peak"] is None  # CPU
    assert abs(u["tokens_per_s"] * u["step_s"] - 4 * 32) < 1e-6 * 4 * 32 + 1
    assert d["decode_tokens_per_s"] > 0 and d["roofline_tokens_per_s"] > 0
    # the roofline reads every parameter and the whole allocated cache once per step
    assert d["param_mb"] > 0 and d["kv_mb"] > 0
    assert (
        abs(d["fraction_of_roofline"] - d["roofline_step_ms"] / d["decode_step_ms"])
        < 1e-3 * d["fraction_of_roofline"] + 1e-3
    )


def test_vendor_peaks_by_device_kind():
    assert accel_bench.vendor_peak("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
    assert accel_bench.vendor_peak("NVIDIA H200", "bfloat16") == 989e12
    assert accel_bench.vendor_peak("cpu", "bfloat16") is None
