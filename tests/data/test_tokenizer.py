"""Tokenizers: the built-in character tokenizer saved and reloaded through AutoTokenizer,
and the same wrapper on a BPE tokenizer directory laid out like a real checkpoint's."""

import json
import os

import pytest
from transformers import AutoTokenizer

from upt_jax.data import tokenizer as tok_lib

ALL_CHARS = tok_lib.CHAR_SET


@pytest.fixture(scope="module")
def char_dir(tmp_path_factory):
    return tok_lib.save_char_tokenizer(tmp_path_factory.mktemp("char_tok"))


def test_char_tokenizer_files_and_autotokenizer_load(char_dir):
    assert sorted(os.listdir(char_dir)) == ["tokenizer.json", "tokenizer_config.json"]
    with open(os.path.join(char_dir, "tokenizer_config.json")) as f:
        config = json.load(f)
    assert config["chat_template"] == tok_lib.CHAR_CHAT_TEMPLATE
    hf = AutoTokenizer.from_pretrained(char_dir, local_files_only=True)
    assert len(hf) == len(tok_lib.CHAR_SPECIAL_TOKENS) + len(ALL_CHARS) == 105
    assert hf.encode("7+5", add_special_tokens=False) == [tok_lib.char_vocabulary()[c] for c in "7+5"]


def test_char_tokenizer_ids(char_dir):
    tok = tok_lib.Tokenizer.from_pretrained(char_dir)
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 2, 3)
    assert tok.stop_ids == (3, 7)  # <eos>, <|end|>
    assert tok.vocab_size == len(tok) == 105


@pytest.mark.parametrize(
    "text",
    [
        "What is 347+586?\n7+6+0=13, carry 1, so far 3\n\\boxed{933}",
        ALL_CHARS,
        "  leading and trailing spaces  ",
        "Question:\nx\nAnswer:\nLet's think step by step.",
        "",
    ],
)
def test_char_round_trip_one_token_per_character(char_dir, text):
    tok = tok_lib.Tokenizer.from_pretrained(char_dir)
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert tok.decode(ids) == text
    assert tok.encode_batch([text, "12"]) == [ids, tok.encode("12")]


def test_char_unknown_characters_map_to_unk(char_dir):
    tok = tok_lib.Tokenizer.from_pretrained(char_dir)
    ids = tok.encode("1é2")
    assert ids == [tok.encode("1")[0], 1, tok.encode("2")[0]]
    assert tok.decode(ids) == "12"
    assert tok.decode(ids, skip_special_tokens=False) == "1<unk>2"


def test_char_chat_template_with_system_prompt(char_dir):
    tok = tok_lib.Tokenizer.from_pretrained(char_dir)
    text = tok.apply_chat_template("What is 2+3?", system_prompt="Be brief.")
    assert text == "<bos><|system|>Be brief.<|end|><|user|>What is 2+3?<|end|><|assistant|>"
    ids = tok.encode(text)
    assert ids[:2] == [2, 4] and ids[-1] == 6  # <bos> <|system|> ... <|assistant|>
    assert tok.decode(ids, skip_special_tokens=False) == text
    assert tok.decode(ids) == "Be brief.What is 2+3?"
    # Without a system prompt, and with an existing system message replaced.
    assert tok.apply_chat_template("hi") == "<bos><|user|>hi<|end|><|assistant|>"
    msgs = [
        {"role": "system", "content": "old"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "5"},
    ]
    assert tok.apply_chat_template(msgs, system_prompt="new", add_generation_prompt=False) == (
        "<bos><|system|>new<|end|><|user|>hi<|end|><|assistant|>5<|end|>"
    )


def test_char_tokenizer_helpers_share_the_autotokenizer_path():
    a, b = tok_lib.char_tokenizer(), tok_lib.load_tokenizer("char")
    assert type(a.hf).__name__ == type(b.hf).__name__
    assert a.encode("12+3") == b.encode("12+3")


def _write_bpe_checkpoint_tokenizer(directory):
    """A byte-level BPE tokenizer with a ChatML template and no pad token, laid out like
    a Qwen checkpoint directory (tokenizer.json, tokenizer_config.json,
    generation_config.json)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["What is 12+35? The answer is 47."] * 20, trainer)
    tok.save(os.path.join(directory, "tokenizer.json"))
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
        "{% endif %}"
    )
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump(
            {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "chat_template": template}, f
        )
    with open(os.path.join(directory, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": [2, 0]}, f)


def test_wrapper_on_a_checkpoint_style_bpe_tokenizer(tmp_path):
    _write_bpe_checkpoint_tokenizer(tmp_path)
    tok = tok_lib.load_tokenizer(tmp_path)
    assert tok.bos_id is None
    assert tok.eos_id == 2 and tok.pad_id == 2  # no pad token: falls back to eos
    assert set(tok.stop_ids) == {2, 0}  # eos + generation_config + <|endoftext|>
    text = "What is 12+35? Ünïcode ok"
    assert tok.decode(tok.encode(text)) == text
    prompt = tok.apply_chat_template("What is 1+1?", system_prompt="You are careful.")
    assert prompt == (
        "<|im_start|>system\nYou are careful.<|im_end|>\n<|im_start|>user\n"
        "What is 1+1?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_no_chat_template_is_a_clear_error(tmp_path):
    _write_bpe_checkpoint_tokenizer(tmp_path)
    with open(tmp_path / "tokenizer_config.json") as f:
        config = json.load(f)
    del config["chat_template"]
    with open(tmp_path / "tokenizer_config.json", "w") as f:
        json.dump(config, f)
    tok = tok_lib.load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="no chat template"):
        tok.apply_chat_template("hi")
