"""experiments/hpt_paper.py: the paper's setting as a config (issue #21).

The default variant is the released code's run (checked value by value; it cannot train here);
``:tiny`` trains through ``upt train`` on a tiny local HF Qwen2 with a chat template and a small
LUFFY-layout parquet written here, on the same recipe and fsdp mesh, then the paper's evaluation
protocol runs on it at test scale.
"""

import json
import os

import numpy as np
import pytest

from experiments import hpt_paper
from tests.train.test_hf_handoff import make_hf_dir
from upt_jax import cli, upge
from upt_jax.eval_cli import build_parser
from upt_jax.train import schema


def test_hpt_paper_config_is_the_released_codes_run():
    c = cli.load_config(["--config", "experiments/hpt_paper.py"])
    schema.validate(c)
    hp = c.recipe.hparams
    assert (c.recipe.name, hp.variant, hp.gamma, hp.entropy_coef, hp.sft_loss_coef, hp.max_len) == (
        "hpt",
        "released_code",
        0.0,
        0.001,
        1.0,
        8192,
    )
    assert "kl_coef" not in hp  # no KL, no reference model
    t, r = c.train, c.rollout
    assert (t.learning_rate, t.questions_per_step, t.steps, t.weight_decay, t.max_grad_norm, t.skip_grad_norm) == (
        5e-6,
        128,
        500,
        0.01,
        1.0,
        80.0,
    )
    assert (r.n, r.temperature, r.top_p, r.max_new_tokens) == (8, 1.0, 1.0, 8192)
    assert (c.model.init, c.data.template, c.data.verifier, c.data.source) == ("hf", "chat", "math", "file")
    assert c.data.path.endswith(".parquet") and c.model.hf_dir == c.tokenizer
    assert (c.mesh.data, c.mesh.fsdp, c.mesh.tensor) == (1, -1, 1)
    assert (c.model.param_dtype, c.model.dtype, c.model.remat) == ("float32", "bfloat16", "full")
    # every micro-batch holds whole groups of 8 rollouts + 1 demonstration that split over 8 devices
    rows = t.questions_per_step * (r.n + 1) // t.microbatches
    assert t.questions_per_step % t.microbatches == 0 and rows % 8 == 0
    recipe = upge.get_recipe("hpt", **hp.to_dict())
    assert [x.name for x in recipe.terms] == ["rl", "sft", "entropy_bonus"]
    with pytest.raises(ValueError, match="variants are full, tiny"):
        hpt_paper.get_config("7b")


def test_hpt_paper_eval_protocol_is_the_papers():
    cmds = hpt_paper.eval_commands("runs/hpt_paper")
    parsed = [build_parser().parse_args(a[1:]) for a in cmds]  # every flag is one `upt eval` takes
    k_of = {b: a.k for a in parsed for b in a.benchmarks}
    assert k_of == {
        "aime24": 32,
        "aime25": 32,
        "amc23": 32,
        "math500": 1,
        "minerva": 1,
        "olympiadbench": 1,
        "gpqa_diamond": 1,
    }
    assert {(a.temperature, a.top_p, a.max_new_tokens, a.run_dir) for a in parsed} == {
        (0.6, 0.95, 8192, "runs/hpt_paper")
    }
    assert len({a.out for a in parsed}) == 2


def _write_parquet(path, n=8):
    """OpenR1-Math-46k as LUFFY/HPT ship it: a chat prompt, the target as an assistant message, the
    answer under reward_model.ground_truth."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from upt_jax.data import synthetic

    rows = [
        {
            "data_source": "openr1",
            "prompt": [{"role": "user", "content": r["question"]}],
            "target": [{"role": "assistant", "content": r["demonstration"]}],
            "reward_model": {"ground_truth": r["answer"], "style": "rule"},
            "extra_info": {"index": i},
        }
        for i, r in enumerate(synthetic.generate("add_2", n, seed=3))
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)


def _train_tiny(tmp_path, monkeypatch, *overrides) -> list[dict]:
    """``upt train --config experiments/hpt_paper.py:tiny`` in ``tmp_path`` with the tiny HF dir and
    parquet at the config's own paths; returns metrics.jsonl."""
    monkeypatch.chdir(tmp_path)
    os.makedirs("tiny")
    make_hf_dir("tiny/qwen2")
    _write_parquet("tiny/openr1.parquet")
    assert cli.main(["train", "--config", "experiments/hpt_paper.py:tiny", *overrides]) == 0
    history = [json.loads(x) for x in open("runs/hpt_paper_tiny/metrics.jsonl")]
    for m in history:
        assert m["skipped"] == 0.0 and np.isfinite(m["loss"])
        assert 0.0 <= m["gate/sft_frac"] <= 1.0
        assert m["loss/entropy_bonus"] < 0.0  # −0.001 × the routed rows' mean entropy
    assert json.load(open("runs/hpt_paper_tiny/config.json"))["data"]["template"] == "chat"
    return history


def test_hpt_paper_tiny_one_step_smoke(tmp_path, monkeypatch):
    """One step of the :tiny variant (the default suite's twin of the slow test below)."""
    history = _train_tiny(tmp_path, monkeypatch, "--config.train.steps=1")
    assert [m["step"] for m in history] == [1]


@pytest.mark.slow
def test_hpt_paper_tiny_trains_on_a_local_hf_model_and_a_luffy_parquet(tmp_path, monkeypatch):
    """The :tiny variant as configured (2 steps), then the paper's evaluation protocol at test scale."""
    history = _train_tiny(tmp_path, monkeypatch)
    assert [m["step"] for m in history] == [1, 2]
    # the paper's protocol at test scale: two benchmark groups, T = 0.6, top-p 0.95
    assert hpt_paper.main(["eval", "runs/hpt_paper_tiny", "--variant", "tiny"]) == 0
    avg = json.load(open("runs/hpt_paper_tiny/eval/avg32/results.json"))
    one = json.load(open("runs/hpt_paper_tiny/eval/one_sample/results.json"))
    assert set(avg["results"]) == {"aime24", "aime25", "amc23"} and avg["settings"]["k"] == 2
    assert set(one["results"]) == {"math500", "minerva", "olympiadbench", "gpqa_diamond"}
    assert one["settings"]["k"] == 1 and one["settings"]["temperature"] == 0.6 and one["settings"]["top_p"] == 0.95
