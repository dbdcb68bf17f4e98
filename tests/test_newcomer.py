"""A researcher's first hour, offline, from the command line (issue #21, "Done when", first bullet).

A tiny Qwen2 and a byte-level BPE tokenizer with a chat template in a temporary directory (as a
downloaded Qwen2.5 sits on disk) →
``upt train --config sft`` on a multi-turn ``messages`` JSONL →
``upt train --config grpo`` from that SFT run (its final parameters, bitwise), with the user's own
reward function from ``my_rewards.py`` in the working directory reading an extra dataset column, and
β set on the command line →
``upt eval`` on the user's JSONL with that reward →
``upt export`` → ``transformers`` loads it, its logits equal upt_jax's within 1e-4, and it generates.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from tests.models.hf_fixtures import hf_logits
from tests.train.test_hf_handoff import make_hf_dir
from upt_jax import cli

MY_REWARDS = '''
def bonus(prompts, completions, bonus, **kwargs):
    """The row's own `bonus` column: what a reward reading the dataset looks like."""
    return [float(b) for b in bonus]
'''
# 8 simulated devices: rows split over data=2, the rest of the mesh on tensor; tiny shapes
SMALL = [
    "--config.mesh.data=2",
    "--config.mesh.fsdp=1",
    "--config.mesh.tensor=-1",
    "--config.log.progress=false",
    "--config.checkpoint.async_save=false",
    "--config.train.questions_per_step=4",
]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_newcomer_path_sft_grpo_eval_export(tmp_path, monkeypatch):
    import torch
    import transformers

    from upt_jax.train.run_model import load_run_model
    from upt_jax.train.trainer import Trainer

    monkeypatch.chdir(tmp_path)  # `upt` runs where the user's files are
    (tmp_path / "my_rewards.py").write_text(MY_REWARDS)
    hf = make_hf_dir(tmp_path / "Qwen2-tiny")
    chats = [
        {
            "messages": [
                {"role": "user", "content": f"{i} + 1 = ?"},
                {"role": "assistant", "content": f"{i + 1}"},
                {"role": "user", "content": "Sure?"},
                {"role": "assistant", "content": "Yes."},
            ]
        }
        for i in range(4)
    ]
    sft_data = _jsonl(tmp_path / "chats.jsonl", chats)
    math = [{"question": f"{i} + 2 = ?", "answer": str(i + 2), "bonus": i / 4} for i in range(4)]
    rl_data = _jsonl(tmp_path / "math.jsonl", math)

    # 1. SFT on the messages file: no field flags, the chat template from the tokenizer
    assert (
        cli.main(
            [
                "train",
                "--config",
                "sft",
                "--config.run_dir=runs/sft",
                "--config.train.steps=2",
                "--config.model.init=hf",
                f"--config.model.hf_dir={hf}",
                f"--config.tokenizer={hf}",
                "--config.data.template=chat",
                "--config.data.source=file",
                f"--config.data.path={sft_data}",
                *SMALL,
            ]
        )
        == 0
    )
    sft_model, _, _, sft_step = load_run_model("runs/sft")
    assert sft_step == 2

    # 2. GRPO from the SFT run, parsed as `upt train` parses it: the user's reward, β from the command line
    c = cli.load_config(
        [
            "--config",
            "grpo",
            "--config.run_dir=runs/grpo",
            "--config.train.steps=1",
            "--config.model.init=checkpoint",
            "--config.model.checkpoint=runs/sft",
            "--config.data.source=file",
            f"--config.data.path={rl_data}",
            "--config.reward.functions=my_rewards:bonus",
            "--config.recipe.hparams.kl_coef=0.04",
            "--config.rollout.n=2",
            "--config.rollout.max_new_tokens=6",
            *SMALL,
        ]
    )
    assert c.recipe.hparams.kl_coef == 0.04 and c.reward.functions == ("my_rewards:bonus",)
    t = Trainer(c)
    try:
        from flax import nnx

        start = jax.device_get(t.state.params)
        for a, b in zip(jax.tree.leaves(start), jax.tree.leaves(jax.device_get(nnx.state(sft_model)))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the SFT run's final params, bitwise
        assert c.data.template == "chat"  # carried from the SFT run
        (m,) = t.run()
    finally:
        t.close()
    assert m["reward/bonus"] == m["reward/mean"] == np.mean([r["bonus"] for r in math])  # the column, all 4 rows
    assert np.isfinite(m["loss"]) and m["skipped"] == 0.0

    # 3. evaluation on the user's own file with the user's reward
    assert (
        cli.main(
            [
                "eval",
                "--run-dir",
                "runs/grpo",
                "--data",
                rl_data,
                "--reward",
                "my_rewards:bonus",
                "--k",
                "1",
                "--max-new-tokens",
                "4",
                "--no-progress",
                "--out",
                "eval",
            ]
        )
        == 0
    )
    res = json.load(open("eval/results.json"))
    assert res["settings"]["template"] == "chat"
    assert res["results"]["math"]["mean_reward"] == np.mean([r["bonus"] for r in math])
    assert len(open("eval/completions.jsonl").readlines()) == 4

    # 4. export; transformers loads it, same logits, generates
    assert cli.main(["export", "runs/grpo", "exported"]) == 0
    model, tok, _, _ = load_run_model("runs/grpo")
    hf_model = transformers.AutoModelForCausalLM.from_pretrained("exported").float().eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained("exported")
    prompt = hf_tok.apply_chat_template(
        [{"role": "user", "content": "3 + 2 = ?"}], tokenize=False, add_generation_prompt=True
    )
    ids = np.asarray([tok.encode(prompt)])
    ours, _ = model(jnp.asarray(ids))
    np.testing.assert_allclose(np.asarray(ours), hf_logits(hf_model, ids, np.ones_like(ids)), atol=1e-4, rtol=0)
    with torch.no_grad():
        out = hf_model.generate(
            torch.tensor(ids), attention_mask=torch.ones(ids.shape, dtype=torch.long), max_new_tokens=4, do_sample=False
        )
    assert out.shape[1] > ids.shape[1]
    assert os.path.isfile("exported/generation_config.json")
