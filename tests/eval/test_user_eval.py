"""Evaluation of your own model on your own data (issue #21, item 4): ``upt eval --hf-dir`` prompts a
chat model with its chat template (or the template ``upt export`` recorded), ``--data my.jsonl``
evaluates a user file, ``--reward`` scores it with any reward function, and every sample is saved to
``completions.jsonl``."""

import json

import pytest

from tests.train.test_hf_handoff import make_hf_dir
from upt_jax import cli


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return make_hf_dir(tmp_path_factory.mktemp("hf") / "tiny-qwen2")


@pytest.fixture(scope="module")
def user_jsonl(tmp_path_factory):
    rows = [
        {"messages": [{"role": "user", "content": f"{i} + 1 = ?"}], "answer": str(i + 1), "bonus": i / 4}
        for i in range(3)
    ]
    path = tmp_path_factory.mktemp("data") / "my_eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path), rows


def _eval(argv):
    assert cli.main(["eval", "--no-progress", "--max-new-tokens", "4", "--k", "2", *argv]) == 0


def test_hf_template_is_chat_for_a_chat_tokenizer_and_the_exported_one_otherwise(hf_dir, tmp_path):
    import shutil

    from upt_jax.data import load_tokenizer
    from upt_jax.eval.inputs import hf_template

    tok = load_tokenizer(hf_dir)
    assert hf_template(hf_dir, tok) == "chat"
    exported = tmp_path / "export"
    shutil.copytree(hf_dir, exported)
    (exported / "upt_jax_export.json").write_text(json.dumps({"template": "zero"}))
    assert hf_template(exported, tok) == "zero"


def test_eval_a_user_file_with_a_reward_function_saves_every_completion(hf_dir, user_jsonl, tmp_path):
    path, rows = user_jsonl
    out = tmp_path / "eval"
    _eval(["--hf-dir", hf_dir, "--data", path, "--reward", "tests.rewards.user_rewards:bonus", "--out", str(out)])
    res = json.load(open(out / "results.json"))
    assert res["settings"]["template"] == "chat" and res["settings"]["data"] == [path]
    suite = res["results"]["my_eval"]
    assert suite["num_questions"] == 3 and suite["mean_reward"] == pytest.approx(sum(r["bonus"] for r in rows) / 3)
    lines = [json.loads(x) for x in open(out / "completions.jsonl")]
    assert len(lines) == 3 * 2 and {x["sample"] for x in lines} == {0, 1}
    by_prompt = {r["messages"][0]["content"]: r for r in rows}
    for x in lines:
        assert x["suite"] == "my_eval" and x["reward"] == pytest.approx(by_prompt[x["prompt"]]["bonus"])
        assert isinstance(x["completion"], str)
    assert suite["avg_at_k"] == pytest.approx(sum(r["bonus"] > 0.5 for r in rows) / 3)


def test_eval_a_user_file_with_the_verifier(hf_dir, user_jsonl, tmp_path):
    path, _ = user_jsonl
    out = tmp_path / "eval"
    _eval(["--hf-dir", hf_dir, "--data", path, "--verifier", "integer", "--out", str(out)])
    suite = json.load(open(out / "results.json"))["results"]["my_eval"]
    assert sum(suite["reasons"].values()) == 6  # every sample verified (an untrained model: no_answer)
    assert len(open(out / "completions.jsonl").readlines()) == 6
