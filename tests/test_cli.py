"""The demo runs end to end (export → reload → sample) and reports what it measured."""
import json
import os

from upt_jax import cli


def test_demo_end_to_end(tmp_path):
    summary = cli.demo(str(tmp_path), seed=0, max_new_tokens=8)
    assert summary["max_abs_logit_diff"] == 0.0
    assert summary["recompiled"] is False
    assert summary["tokens_per_s"] > 0
    assert os.path.exists(os.path.join(tmp_path, "hf_checkpoint", "model.safetensors"))
    with open(tmp_path / "demo.json") as f:
        assert json.load(f)["params"] == summary["params"]
