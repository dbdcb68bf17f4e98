"""A model loaded from Hugging Face keeps its shape, tokenizer and chat template through every later
stage (issue #18, item 1): SFT from a tiny HF Qwen2 with its own BPE tokenizer, then GRPO initialised
from the SFT run (tokenizer not given: carried) starting from the SFT run's final params bitwise;
the same through ``upt pipeline``; ``upt eval --run-dir`` rebuilding the Qwen2 shape; the errors
for a tokenizer that does not match the run's and for a directory that records no architecture."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from experiments import grpo, sft, sft_then_grpo
from tests.train.test_trainer import shrink
from upt_jax.train.trainer import Trainer

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MODEL_VOCAB = 320  # > the tokenizer's 300 tokens, padded like a real Qwen2 embedding


def make_hf_dir(d) -> str:
    """A tiny random HF Qwen2 (2 layers, hidden 32) and a byte-level BPE tokenizer trained on a few
    synthetic questions, with a Qwen-style chat template, saved together in ``d``."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from upt_jax.data import synthetic

    d = str(d)
    texts = [r["question"] + "\n" + r["demonstration"] for r in synthetic.generate("add_2", 20, seed=1)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(d)
    cfg = transformers.Qwen2Config(
        vocab_size=MODEL_VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    transformers.Qwen2ForCausalLM(cfg).float().save_pretrained(d, safe_serialization=True)
    return d


def sft_config(run_dir, hf_dir, steps=2):
    c = shrink(sft.get_config(), run_dir, steps=steps)
    c.model.init, c.model.hf_dir, c.tokenizer, c.data.template = "hf", hf_dir, hf_dir, "chat"
    c.data.n_per_tier = 8
    return c


def grpo_config(run_dir, parent, steps=1):
    """GRPO started from ``parent`` with the tokenizer and template left at their defaults."""
    from upt_jax.cli import load_config

    # what `upt train --config grpo --config.recipe.hparams.kl_coef=0.04 ...` parses
    c = shrink(load_config(["--config", "grpo", "--config.recipe.hparams.kl_coef=0.04"]), run_dir, steps=steps)
    assert c.recipe.hparams.kl_coef == 0.04
    c.model.init, c.model.checkpoint = "checkpoint", str(parent)
    c.data.n_per_tier = 8
    return c


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _assert_bitwise(a, b):
    la, lb = _leaves(a), _leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return make_hf_dir(tmp_path_factory.mktemp("hf") / "tiny-qwen2")


@pytest.fixture(scope="module")
def sft_run(hf_dir, tmp_path_factory):
    """``(run_dir, final params)``: SFT from the HF directory, params taken from the trainer in
    memory after its last update (not from a checkpoint)."""
    run = tmp_path_factory.mktemp("runs") / "sft"
    t = Trainer(sft_config(run, hf_dir))
    try:
        t.run()
        final = jax.device_get(t.state.params)
    finally:
        t.close()
    return str(run), final


def test_sft_run_records_the_hf_model_tokenizer_and_template(sft_run, hf_dir):
    from upt_jax.models import ModelConfig

    run, _ = sft_run
    rec = json.load(open(os.path.join(run, "model.json")))
    assert ModelConfig.from_dict(rec["model"]) == ModelConfig.from_pretrained(hf_dir)
    assert rec["model"]["model_type"] == "qwen2" and rec["model"]["hidden_size"] == 32
    assert rec["source"] == {"init": "hf", "hf_dir": os.path.abspath(hf_dir)}
    assert rec["tokenizer"] == os.path.abspath(hf_dir) and rec["tokenizer_vocab_size"] == 300
    assert rec["template"] == "chat" and rec["chat_template"] == CHAT_TEMPLATE


def test_grpo_from_the_sft_run_starts_from_its_final_params_bitwise(sft_run, hf_dir, tmp_path, caplog):
    from flax import nnx

    run, final = sft_run
    c = grpo_config(tmp_path / "grpo", run)
    with caplog.at_level("INFO", logger="upt_jax"):
        t = Trainer(c)
    try:
        # carried from the SFT run: tokenizer (one INFO line) and prompt template
        assert c.tokenizer == os.path.abspath(hf_dir) and t.tok.vocab_size == 300
        assert c.data.template == "chat"
        assert sum("config.tokenizer=" in r.getMessage() for r in caplog.records) == 1
        assert t.sampler.cfg.vocab_size == MODEL_VOCAB and t.sampler.cfg.hidden_size == 32
        _assert_bitwise(jax.device_get(t.state.params), final)  # before any update
        _assert_bitwise(jax.device_get(t.ref_params), final)  # the KL reference (kl_coef=0.04)
        (m,) = t.run()
        assert m["step"] == 1 and np.isfinite(m["loss"]) and m["skipped"] == 0.0
        trained = jax.device_get(t.state.params)
    finally:
        t.close()
    rec = json.load(open(tmp_path / "grpo" / "model.json"))
    assert rec["source"] == {
        "init": "checkpoint",
        "checkpoint": run,
        "parent": {"init": "hf", "hf_dir": os.path.abspath(hf_dir)},
    }
    assert rec["tokenizer"] == os.path.abspath(hf_dir) and rec["model"]["vocab_size"] == MODEL_VOCAB
    assert json.load(open(tmp_path / "grpo" / "config.json"))["tokenizer"] == os.path.abspath(hf_dir)
    # evaluation of the GRPO run (model.init=checkpoint) rebuilds the Qwen2 model it trained
    from upt_jax.train.run_model import load_run_model

    model, tok, config, step = load_run_model(tmp_path / "grpo")
    assert model.cfg.vocab_size == MODEL_VOCAB and model.cfg.hidden_size == 32 and step == 1
    assert tok.vocab_size == 300 and config.data.template == "chat"
    _assert_bitwise(nnx.state(model), trained)


def test_eval_of_the_sft_run_rebuilds_the_qwen2_model(sft_run, hf_dir, tmp_path):
    from flax import nnx

    from upt_jax import cli
    from upt_jax.train.run_model import load_run_model
    from upt_jax.models import ModelConfig

    run, final = sft_run
    model, tok, config, step = load_run_model(run)
    assert model.cfg == ModelConfig.from_pretrained(hf_dir) and tok.vocab_size == 300 and step == 2
    _assert_bitwise(nnx.state(model), final)
    # a run directory from before model.json: its config.json's model.hf_dir gives the shape
    old = tmp_path / "old_sft"
    shutil.copytree(run, old)
    os.remove(old / "model.json")
    model, _, _, _ = load_run_model(old)
    assert model.cfg.hidden_size == 32 and model.cfg.vocab_size == MODEL_VOCAB
    _assert_bitwise(nnx.state(model), final)
    out = tmp_path / "eval"
    assert (
        cli.main(
            [
                "eval",
                "--run-dir",
                run,
                "--tiers",
                "add_2",
                "--k",
                "1",
                "--n-per-tier",
                "2",
                "--max-new-tokens",
                "4",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    settings = json.load(open(out / "results.json"))["settings"]
    assert settings["template"] == "chat"


def test_a_tokenizer_other_than_the_runs_is_an_error(sft_run, tmp_path):
    from upt_jax.data.tokenizer import save_char_tokenizer

    run, _ = sft_run
    c = grpo_config(tmp_path / "grpo", run)
    c.tokenizer = save_char_tokenizer(tmp_path / "char_tok")  # set explicitly, 105 tokens
    with pytest.raises(
        ValueError,
        match=r"config\.tokenizer=.*char_tok.* is not the tokenizer .*tiny-qwen2.* "
        r"config\.model\.checkpoint=",
    ):
        Trainer(c)


def test_a_directory_that_records_no_architecture_is_an_error(sft_run, tmp_path):
    run, _ = sft_run
    bare = tmp_path / "bare"
    shutil.copytree(os.path.join(run, "checkpoints"), bare / "checkpoints")
    c = grpo_config(tmp_path / "grpo", bare)
    with pytest.raises(FileNotFoundError, match=r"config\.model\.checkpoint=.*records no model architecture"):
        Trainer(c)


def test_pipeline_sft_then_grpo_from_hf(hf_dir, tmp_path):
    from upt_jax.train.pipeline import run_pipeline

    c = sft_then_grpo.get_config()
    c.run_dir = str(tmp_path / "pipe")
    c.sft = sft_config("unused", hf_dir, steps=1)
    c.grpo = grpo_config("unused", "unused", steps=1)
    c.grpo.model.init, c.grpo.model.checkpoint = "preset", ""  # the pipeline hands off
    reports = run_pipeline(c)
    assert [r["status"] for r in reports] == ["ran", "ran"]
    rec = json.load(open(tmp_path / "pipe" / "grpo" / "model.json"))
    assert rec["model"]["model_type"] == "qwen2" and rec["model"]["vocab_size"] == MODEL_VOCAB
    assert rec["tokenizer"] == os.path.abspath(hf_dir) and rec["template"] == "chat"
    assert rec["source"]["parent"] == {"init": "hf", "hf_dir": os.path.abspath(hf_dir)}
