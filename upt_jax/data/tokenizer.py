"""Tokenizers: one thin wrapper over a local Hugging Face tokenizer directory.

Real checkpoints (Llama 3, Qwen2.5, Qwen3, ...) and the built-in character-level
tokenizer of the synthetic tasks go through the same code path: a directory holding
``tokenizer.json`` and ``tokenizer_config.json`` (with the chat template), loaded by
``transformers.AutoTokenizer.from_pretrained(dir, local_files_only=True)``.

Example::

    >>> from upt_jax.data import tokenizer as tok_lib
    >>> tok = tok_lib.char_tokenizer()            # built-in, saved to a temp dir, reloaded
    >>> ids = tok.encode("12+35")
    >>> tok.decode(ids)
    '12+35'
    >>> tok.apply_chat_template("1+1", system_prompt="Be brief.")
    '<bos><|system|>Be brief.<|end|><|user|>1+1<|end|><|assistant|>'
"""

from __future__ import annotations

import functools
import json
import os
import string
import tempfile
from typing import Any, Mapping, Sequence

__all__ = [
    "Tokenizer",
    "CHAR_SPECIAL_TOKENS",
    "CHAR_CHAT_TEMPLATE",
    "char_vocabulary",
    "save_char_tokenizer",
    "char_tokenizer",
    "load_tokenizer",
]

# Special tokens of the built-in tokenizer; ids are their positions (pad = 0).
CHAR_SPECIAL_TOKENS = (
    "<pad>",
    "<unk>",
    "<bos>",
    "<eos>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
)
CHAR_SET = string.digits + string.ascii_lowercase + string.ascii_uppercase + "+-*/=^()[]{}<>.,:;!?'\"\\_$%&|~#@` \n\t"
# Each message is `<|role|>content<|end|>`; the generation prompt is `<|assistant|>`.
CHAR_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
# Markers that end an assistant turn in common chat formats (looked up in the vocab).
_KNOWN_END_MARKERS = (
    "<|end|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "<end_of_turn>",
)


def char_vocabulary() -> dict[str, int]:
    """The built-in vocabulary: special tokens, then one token per character."""
    tokens = list(CHAR_SPECIAL_TOKENS) + list(CHAR_SET)
    assert len(set(tokens)) == len(tokens)
    return {t: i for i, t in enumerate(tokens)}


def save_char_tokenizer(directory: str | os.PathLike) -> str:
    """Writes the built-in character-level tokenizer to ``directory``.

    Files: ``tokenizer.json`` (a `tokenizers` WordLevel model whose pre-tokenizer
    splits every character) and ``tokenizer_config.json`` (special tokens and the chat
    template), so that ``AutoTokenizer.from_pretrained(directory)`` loads it.
    Characters outside the vocabulary map to ``<unk>``.

    Returns:
        The directory, as a string.
    """
    from tokenizers import Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    tok = HFTokenizer(models.WordLevel(vocab=char_vocabulary(), unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(list(CHAR_SPECIAL_TOKENS))
    tok.save(os.path.join(directory, "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "chat_template": CHAR_CHAT_TEMPLATE,
        "model_max_length": 1 << 20,
        "clean_up_tokenization_spaces": False,
    }
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return directory


class Tokenizer:
    """A thin wrapper over a Hugging Face tokenizer (``transformers`` 5 API).

    Attributes:
        hf: the wrapped ``transformers`` tokenizer.
        pad_id: padding id (falls back to ``eos_id`` when the tokenizer has none).
        eos_id: end-of-sequence id.
        bos_id: beginning-of-sequence id, or ``None`` (Qwen has none).
        stop_ids: ids that end generation: ``eos_id``, the ``eos_token_id`` list of a
            ``generation_config.json`` beside the tokenizer, and known end-of-turn markers.
        vocab_size: number of ids, including added tokens.
    """

    def __init__(self, hf_tokenizer: Any, *, extra_stop_ids: Sequence[int] = ()):
        self.hf = hf_tokenizer
        self.eos_id = hf_tokenizer.eos_token_id
        self.bos_id = hf_tokenizer.bos_token_id
        pad = hf_tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_id
        vocab = hf_tokenizer.get_vocab()
        stops = [self.eos_id] + list(extra_stop_ids)
        stops += [vocab[m] for m in _KNOWN_END_MARKERS if m in vocab]
        self.stop_ids = tuple(dict.fromkeys(s for s in stops if s is not None))
        self.vocab_size = len(hf_tokenizer)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "Tokenizer":
        """Loads a local tokenizer directory (never touches the network)."""
        from transformers import AutoTokenizer

        directory = os.fspath(directory)
        hf = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        extra = []
        gen_path = os.path.join(directory, "generation_config.json")
        if os.path.exists(gen_path):
            with open(gen_path) as f:
                eos = json.load(f).get("eos_token_id")
            extra = eos if isinstance(eos, list) else ([eos] if eos is not None else [])
        return cls(hf, extra_stop_ids=extra)

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``; no BOS/EOS unless ``add_special_tokens``."""
        return list(self.hf.encode(text, add_special_tokens=add_special_tokens))

    def encode_batch(self, texts: Sequence[str], *, add_special_tokens: bool = False) -> list[list[int]]:
        return [list(x) for x in self.hf(list(texts), add_special_tokens=add_special_tokens)["input_ids"]]

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` (a list or a 1-D array)."""
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def apply_chat_template(
        self,
        messages: str | Sequence[Mapping[str, str]],
        *,
        system_prompt: str | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        """Renders a conversation with the tokenizer's chat template.

        Args:
            messages: a user question (str) or a list of ``{"role", "content"}`` dicts.
            system_prompt: if given, prepended as a ``system`` message (an existing leading
                system message is replaced).
            add_generation_prompt: end with the assistant header, ready for generation.

        Returns:
            The rendered text; encode it with ``add_special_tokens=False`` (the template
            already holds any BOS).
        """
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        messages = [dict(m) for m in messages]
        if system_prompt is not None:
            if messages and messages[0].get("role") == "system":
                messages = messages[1:]
            messages = [{"role": "system", "content": system_prompt}] + messages
        if not getattr(self.hf, "chat_template", None):
            raise ValueError("this tokenizer has no chat template; use the 'plain' or 'zero' prompt template instead")
        return self.hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


@functools.lru_cache(maxsize=None)
def _char_tokenizer_dir() -> str:
    return save_char_tokenizer(tempfile.mkdtemp(prefix="upt_jax_char_tokenizer_"))


def char_tokenizer() -> Tokenizer:
    """The built-in character-level tokenizer, saved once per process and reloaded
    through ``AutoTokenizer`` (the same path as a real tokenizer)."""
    return Tokenizer.from_pretrained(_char_tokenizer_dir())


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """``"char"`` (or ``"builtin:char"``) for the built-in tokenizer, else a local directory."""
    if os.fspath(path) in ("char", "builtin:char"):
        return char_tokenizer()
    return Tokenizer.from_pretrained(path)
