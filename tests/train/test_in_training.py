"""What a run shows while it trains (issue #21, item 4): every rollout in ``<run_dir>/completions.jsonl``
(a resume drops the lines after its checkpoint), and ``train.eval_every`` evaluations in the metrics,
for an online run (its sampler) and an offline SFT run (a sampler of its own)."""

import json

import numpy as np

from experiments import grpo, sft
from tests.train.test_trainer import shrink
from upt_jax.train.in_training import StepHooks, step_of
from upt_jax.train.trainer import train


def test_grpo_writes_every_rollout_and_evaluates(tmp_path):
    c = shrink(grpo.get_config(), tmp_path / "run", steps=2)
    c.train.eval_every, c.train.eval_n = 2, 2
    history = train(c)
    lines = [json.loads(x) for x in open(tmp_path / "run" / "completions.jsonl")]
    assert [x["step"] for x in lines] == [1] * 4 + [2] * 4  # 2 questions × 2 rollouts per step
    for m in history:
        rewards = [x["reward"] for x in lines if x["step"] == m["step"]]
        assert np.mean(rewards) == np.float32(m["reward/mean"])
        assert all(isinstance(x["completion"], str) and x["prompt"] for x in lines)
    assert "eval/add_2/avg@k" not in history[0] and 0.0 <= history[1]["eval/add_2/avg@k"] <= 1.0
    logged = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    assert logged[1]["eval/add_2/avg@k"] == history[1]["eval/add_2/avg@k"]


def test_sft_evaluates_with_a_sampler_of_its_own(tmp_path):
    c = shrink(sft.get_config(), tmp_path / "run", steps=1)
    c.train.eval_every, c.train.eval_n = 1, 2
    (m,) = train(c)
    assert 0.0 <= m["eval/add_2/avg@k"] <= 1.0
    assert not (tmp_path / "run" / "completions.jsonl").exists()  # offline: nothing sampled


def test_resume_drops_the_completions_of_later_steps(tmp_path):
    path = tmp_path / "completions.jsonl"
    path.write_text("".join(json.dumps({"step": s, "completion": "x"}) + "\n" for s in (1, 1, 2, 3)) + "garbage\n")
    hooks = StepHooks.__new__(StepHooks)
    hooks.path = str(path)
    hooks.truncate_after(2)
    assert [step_of(x) for x in open(path)] == [1, 1, 2]
    hooks.truncate_after(None)
    assert path.read_text() == ""
