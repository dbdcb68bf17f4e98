"""A tokenizer that does not fit the model is an error naming ``config.tokenizer`` (issue #18
item 2), raised after the tokenizer is read and before any model is built; a model vocabulary
larger than the tokenizer's (padded embeddings, as Qwen's) is fine."""

import json
import os
import re

import pytest

from experiments import grpo, reward_model
from tests.train.test_trainer import shrink
from upt_jax.data import load_tokenizer, save_char_tokenizer
from upt_jax.models import init_model, preset, save_hf_checkpoint
from upt_jax.train import trainer as trainer_lib
from upt_jax.train.trainer import Trainer, train


class Built(Exception):
    """build_model was reached: every check before it passed."""


@pytest.fixture
def stop_at_build(monkeypatch):
    def build_model(*a, **k):
        raise Built()

    monkeypatch.setattr(trainer_lib, "build_model", build_model)


def _tokenizer(directory, extra: int = 0) -> str:
    """A tokenizer directory: the built-in 105 characters plus ``extra`` added tokens."""
    save_char_tokenizer(directory)
    if extra:
        tok = load_tokenizer(directory)
        tok.hf.add_tokens([f"<extra_{i}>" for i in range(extra)])
        tok.hf.save_pretrained(directory)
    assert load_tokenizer(directory).vocab_size == 105 + extra
    return str(directory)


def _hf_model(directory, vocab_size: int, tokenizer_extra: int | None = None) -> str:
    """A tiny random Qwen2 HF checkpoint with ``vocab_size`` embedding rows (and its own tokenizer
    of ``105 + tokenizer_extra`` tokens when given)."""
    cfg = preset(
        "tiny",
        vocab_size=vocab_size,
        num_layers=1,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        num_kv_heads=1,
        head_dim=16,
        tie_word_embeddings=True,
    )
    save_hf_checkpoint(init_model(cfg, 0), directory)
    if tokenizer_extra is not None:
        _tokenizer(directory, tokenizer_extra)
    return str(directory)


def _config(tmp_path, **model):
    c = shrink(grpo.get_config(), tmp_path / "run", steps=1)
    for k, v in model.items():
        c.model[k] = v
    return c


def test_builtin_tokenizer_on_a_hf_model_with_its_own_tokenizer_is_an_error(tmp_path, stop_at_build):
    """The issue's case: --config.tokenizer left out on a 487-token model that ships its tokenizer."""
    hf = _hf_model(tmp_path / "hf", 487, tokenizer_extra=382)
    c = _config(tmp_path, init="hf", hf_dir=hf)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"config.tokenizer='char' is the built-in 105-token character tokenizer, but config.model.hf_dir="
            f"'{hf}' ships its own tokenizer (tokenizer.json) for its 487-token vocabulary"
        )
        + ".*"
        + re.escape(f"--config.tokenizer={hf}"),
    ):
        Trainer(c)
    c.tokenizer = hf
    with pytest.raises(Built):  # its own tokenizer: every check passes
        Trainer(c)


def test_tokenizer_larger_than_the_model_vocabulary_is_an_error(tmp_path, stop_at_build):
    hf = _hf_model(tmp_path / "hf", 64)  # no tokenizer files
    c = _config(tmp_path, init="hf", hf_dir=hf)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"config.tokenizer='char' has 105 tokens but config.model.hf_dir="
            f"'{hf}' embeds 64: ids ≥ 64 have no embedding"
        ),
    ):
        Trainer(c)


def test_model_vocabulary_larger_than_the_tokenizer_is_fine(tmp_path, stop_at_build):
    """Padded embeddings (Qwen2.5: 151936 rows for 151665 tokens)."""
    hf = _hf_model(tmp_path / "hf", 512)
    c = _config(tmp_path, init="hf", hf_dir=hf)
    c.tokenizer = _tokenizer(tmp_path / "tok", extra=382)  # 487 ≤ 512
    with pytest.raises(Built):
        Trainer(c)


def test_checkpoint_trained_with_another_tokenizer_is_carried_not_replaced_by_char(tmp_path, stop_at_build):
    """A later stage that leaves config.tokenizer at its default takes the tokenizer its checkpoint
    was trained with (the run-to-run hand-off), never the built-in 105 characters on a 487-token
    model; a different tokenizer set explicitly is an error (tests/train/test_hf_handoff.py)."""
    prev = tmp_path / "prev"
    os.makedirs(prev / "checkpoints" / "1")
    tok = _tokenizer(tmp_path / "tok", extra=382)
    (prev / "config.json").write_text(
        json.dumps({"tokenizer": tok, "model": {"preset": "tiny", "overrides": {"num_layers": 1}}})
    )
    c = _config(tmp_path, init="checkpoint", checkpoint=str(prev))
    with pytest.raises(Built):
        Trainer(c)
    assert c.tokenizer == tok


def test_preset_vocabulary_override_smaller_than_the_tokenizer_is_an_error(tmp_path, stop_at_build):
    c = _config(tmp_path)
    c.model.overrides.vocab_size = 64
    with pytest.raises(
        ValueError,
        match=r"config\.tokenizer='char' has 105 tokens but config\.model\.overrides\."
        r"vocab_size=64",
    ):
        Trainer(c)


def test_reward_model_training_checks_the_tokenizer_too(tmp_path, stop_at_build):
    hf = _hf_model(tmp_path / "hf", 487, tokenizer_extra=382)
    c = shrink(reward_model.get_config(), tmp_path / "rm", steps=1)
    c.model.init, c.model.hf_dir = "hf", hf
    with pytest.raises(ValueError, match=r"config\.tokenizer='char' is the built-in"):
        train(c)
