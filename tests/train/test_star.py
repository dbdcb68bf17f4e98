"""STaR rounds: correct rationales kept, failures rationalised with a hint (stored without it),
each round fine-tunes the base model, finished rounds skipped on rerun."""

import json
import os

import numpy as np

from experiments import star as star_exp
from tests.train.test_trainer import shrink
from upt_jax.train import star


class _HintOnlyVerifier:
    """Rejects everything sampled without a hint, accepts the rationalisations (hinted pass)."""

    calls = 0

    def __init__(self, kind):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        pass

    def scores(self, outputs, golds):
        _HintOnlyVerifier.calls += 1
        return np.full(len(outputs), 0.0 if _HintOnlyVerifier.calls % 2 else 1.0, np.float32)


def test_star_rounds_rationalise_and_resume(tmp_path, monkeypatch):
    import upt_jax.rewards

    monkeypatch.setattr(upt_jax.rewards, "Verifier", _HintOnlyVerifier)
    c = shrink(star_exp.get_config(), tmp_path / "star", steps=2)
    c.star.questions = 4
    c.star.rounds = 2
    c.train.questions_per_step = 2
    reports = star.run_star(c)
    assert [r["status"] for r in reports] == ["ran", "ran"]
    assert all(r["solved"] == 0 and r["rationalised"] == 4 and r["kept"] == 4 for r in reports)
    with open(tmp_path / "star" / "round_1" / "kept.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert all(r["rationalised"] and "Hint" not in r["question"] for r in rows)
    assert os.path.isdir(tmp_path / "star" / "round_2" / "checkpoints")
    again = star.run_star(c)
    assert [r["status"] for r in again] == ["already done", "already done"]
