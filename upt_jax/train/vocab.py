"""The tokenizer must fit the model's vocabulary: checked where both are known (the trainers,
after the tokenizer is read and before the model is built), never a silent fallback.

    check_tokenizer_fits(config, tokenizer.vocab_size)   # raises ValueError naming config.tokenizer

A model vocabulary larger than the tokenizer's is fine (padded embeddings, as Qwen's 151936 rows
for a 151665-token tokenizer); a smaller one is an error (ids past the embedding). The built-in
``char`` tokenizer on a Hugging Face model that ships its own tokenizer files is an error too: its
105 ids would fit most vocabularies and train silently on the wrong tokens.
"""

from __future__ import annotations

import json
import os

# files whose presence in a directory means it holds a Hugging Face tokenizer
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")

BUILTIN = ("char", "builtin:char")


def _ships_tokenizer(directory: str) -> str | None:
    """The first tokenizer file in ``directory``, or None."""
    return next((f for f in TOKENIZER_FILES if os.path.isfile(os.path.join(directory, f))), None)


def _run_config(run_dir: str) -> dict | None:
    """The ``config.json`` of a run directory (or of the parent of its ``checkpoints/``), or None."""
    from etils import epath

    root = str(run_dir).rstrip("/")
    for d in (root, os.path.dirname(root)):
        path = epath.Path(d) / "config.json"
        if path.is_file():
            return json.loads(path.read_text())
    return None


def check_tokenizer_fits(config, vocab_size: int) -> None:
    """Raises ``ValueError`` naming ``config.tokenizer`` and the model's key when the tokenizer
    (``vocab_size`` ids) does not fit the model ``config.model`` describes: a HF directory
    (``init=hf``; its ``config.json``'s ``vocab_size``; a HF directory with tokenizer files while
    ``config.tokenizer`` is the built-in ``char``), a previous run (``init=checkpoint``; the
    tokenizer recorded in its ``config.json``), or ``model.overrides.vocab_size``. Reads config
    files only: no model is built."""
    from upt_jax.models import ModelConfig

    tok = os.fspath(config.tokenizer)
    mc = config.model
    if mc.init == "hf":
        hf = mc.hf_dir
        model_vocab = ModelConfig.from_pretrained(hf).vocab_size
        shipped = _ships_tokenizer(hf)
        if tok in BUILTIN and shipped:
            raise ValueError(
                f"config.tokenizer={tok!r} is the built-in {vocab_size}-token character tokenizer, but "
                f"config.model.hf_dir={hf!r} ships its own tokenizer ({shipped}) for its {model_vocab}-token "
                f"vocabulary: training would feed the model ids it never learned. Set "
                f"--config.tokenizer={hf}"
            )
        if vocab_size > model_vocab:
            raise ValueError(
                f"config.tokenizer={tok!r} has {vocab_size} tokens but config.model.hf_dir={hf!r} embeds "
                f"{model_vocab}: ids ≥ {model_vocab} have no embedding. Use the model's own tokenizer"
                + (f" (--config.tokenizer={hf})" if shipped else "")
            )
        return
    if mc.init == "checkpoint":
        src = _run_config(mc.checkpoint) if mc.checkpoint else None
        if not src:
            return
        recorded = (src.get("model") or {}).get("overrides", {}).get("vocab_size")
        theirs = os.fspath(src.get("tokenizer", "char"))
        if recorded is None and theirs != tok:  # the run's embedding was sized to its own tokenizer
            from upt_jax.data import load_tokenizer

            if theirs not in BUILTIN and not os.path.isdir(theirs):
                return  # not readable here: restoring the params checks the shapes
            recorded = load_tokenizer(theirs).vocab_size
            if recorded != vocab_size:
                raise ValueError(
                    f"config.tokenizer={tok!r} has {vocab_size} tokens but config.model.checkpoint="
                    f"{mc.checkpoint!r} was trained with tokenizer {theirs!r} ({recorded} tokens). Set "
                    f"--config.tokenizer={theirs}"
                )
        if recorded is not None and vocab_size > recorded:
            raise ValueError(
                f"config.tokenizer={tok!r} has {vocab_size} tokens but config.model.checkpoint="
                f"{mc.checkpoint!r} embeds {recorded}: ids ≥ {recorded} have no embedding"
            )
        return
    overrides = mc.overrides.to_dict() if hasattr(mc.overrides, "to_dict") else dict(mc.overrides or {})
    if overrides.get("vocab_size") is not None and vocab_size > overrides["vocab_size"]:
        raise ValueError(
            f"config.tokenizer={tok!r} has {vocab_size} tokens but config.model.overrides.vocab_size="
            f"{overrides['vocab_size']}: ids ≥ {overrides['vocab_size']} have no embedding (leave "
            "vocab_size out to size the model to the tokenizer)"
        )
