"""Prompt templates."""

import pytest

from upt_jax.data import templates
from upt_jax.data.tokenizer import char_tokenizer


def test_zero_template_is_exact():
    assert templates.render_prompt("What is 2+3?", "zero") == (
        "Question:\nWhat is 2+3?\nAnswer:\nLet's think step by step."
    )
    assert templates.join(templates.render_prompt("q", "zero"), "r", "zero") == (
        "Question:\nq\nAnswer:\nLet's think step by step.\nr"
    )


def test_plain_template():
    assert templates.render_prompt("What is 2+3?", "plain") == "What is 2+3?"
    assert templates.join("p", "r", "plain") == "p\nr"


def test_chat_template_with_and_without_system_prompt():
    tok = char_tokenizer()
    assert templates.render_prompt("1+1", "chat", tokenizer=tok) == ("<bos><|user|>1+1<|end|><|assistant|>")
    assert templates.render_prompt("1+1", "chat", tokenizer=tok, system_prompt="S") == (
        "<bos><|system|>S<|end|><|user|>1+1<|end|><|assistant|>"
    )
    assert templates.join("P", "r", "chat") == "Pr"


def test_template_errors():
    with pytest.raises(ValueError, match="needs a tokenizer"):
        templates.render_prompt("q", "chat")
    with pytest.raises(ValueError, match="unknown prompt template"):
        templates.render_prompt("q", "fancy")
    with pytest.raises(ValueError, match="no system prompt"):
        templates.render_prompt("q", "zero", system_prompt="S")
