"""metrics.jsonl: trimmed to the restored step on resume, a line cut short by a crash dropped."""

import json

from upt_jax.train.metrics_log import MetricsWriter, read_metrics


def test_truncate_after_drops_later_steps_and_a_partial_line(tmp_path, caplog):
    w = MetricsWriter(str(tmp_path))
    for s in (1, 2, 3):
        w.write({"step": s, "loss": 0.5})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "lo')  # a write cut short by a crash
    w.truncate_after(2)
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [1, 2]
    assert "unreadable" in caplog.text
    w.write({"step": 3, "loss": 0.25})
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [1, 2, 3]
    with open(tmp_path / "metrics.jsonl") as f:
        assert all(json.loads(line) for line in f)
