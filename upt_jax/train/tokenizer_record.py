"""The tokenizer and prompt template a run directory recorded (`recorded_tokenizer`), and carrying
them into a run that starts from it (`carry_tokenizer`: ``model.init = checkpoint``)."""

from __future__ import annotations

import logging
import os

from upt_jax.train.run_files import read_json, read_record, run_root, tokenizer_spec
from upt_jax.train.run_spec import is_remote

log = logging.getLogger(__name__)

__all__ = ["recorded_tokenizer", "carry_tokenizer"]

_DEFAULT_TOKENIZER = "char"
_DEFAULT_TEMPLATE = "zero"
_PROBE = "Question: 12 + 7 * 3 = ?\nAnswer: \\boxed{33}"


def recorded_tokenizer(path) -> dict | None:
    """What the run directory ``path`` recorded about its tokenizer and prompts: ``tokenizer``,
    ``template``, ``system_prompt`` and, from ``model.json`` only, ``tokenizer_vocab_size`` and
    ``chat_template``; ``None`` when it records nothing (no ``model.json`` nor ``config.json``)."""
    root = run_root(path)
    record = read_record(root)
    if record is not None:
        return {
            k: record.get(k)
            for k in ("tokenizer", "tokenizer_vocab_size", "template", "system_prompt", "chat_template")
        }
    config = read_json(root / "config.json")
    if config is None or "tokenizer" not in config:
        return None
    data = config.get("data") or {}
    return {
        "tokenizer": config["tokenizer"],
        "tokenizer_vocab_size": None,
        "template": data.get("template"),
        "system_prompt": data.get("system_prompt"),
        "chat_template": None,
    }


def _loadable(spec: str) -> bool:
    return spec == "char" or (not is_remote(spec) and os.path.isdir(spec))


def carry_tokenizer(config) -> None:
    """``config.model.init = checkpoint``: the tokenizer and prompt template the parent run
    recorded, applied to ``config`` in place (so this run's ``config.json`` records them too).

    * ``config.tokenizer`` left at its default (``char``) while the parent used another: the
      parent's, with one INFO line (an error if that tokenizer is no longer there).
    * ``config.tokenizer`` set to one that differs from the parent's (another vocabulary size,
      another encoding of a probe text, or another chat template under ``data.template=chat``):
      an error naming both.
    * ``data.template`` left at its default (``zero``) while the parent used another, and
      ``data.system_prompt`` left unset while the parent had one: the parent's, with an INFO line.
    """
    mc = config.model
    if mc.init != "checkpoint" or not mc.checkpoint:
        return
    rec = recorded_tokenizer(mc.checkpoint)
    if rec is None or not rec.get("tokenizer"):
        return
    where = f"config.model.checkpoint={mc.checkpoint!r}"
    theirs, ours = tokenizer_spec(rec["tokenizer"]), tokenizer_spec(config.tokenizer)
    if theirs != ours:
        if ours == _DEFAULT_TOKENIZER:
            if not _loadable(theirs):
                raise FileNotFoundError(
                    f"{where} was trained with tokenizer {theirs!r}, which is not a local directory any more; "
                    "set config.tokenizer to (a copy of) that tokenizer"
                )
            log.info(
                "config.tokenizer=%s: the tokenizer %s was trained with (config.tokenizer was left at its default)",
                theirs,
                where,
            )
            config.tokenizer = theirs
        else:
            _check_same_tokenizer(config, rec, where)
    data = config.data
    if rec.get("template") and data.template == _DEFAULT_TEMPLATE and rec["template"] != data.template:
        log.info(
            "config.data.template=%s: the prompt template %s was trained with (config.data.template "
            "was left at its default)",
            rec["template"],
            where,
        )
        data.template = rec["template"]
    if rec.get("system_prompt") is not None and data.get("system_prompt") is None:
        log.info("config.data.system_prompt: the system prompt %s was trained with", where)
        data.system_prompt = rec["system_prompt"]


def _check_same_tokenizer(config, rec: dict, where: str) -> None:
    """``config.tokenizer`` (set explicitly) encodes as the parent's recorded tokenizer does."""
    from upt_jax.data import load_tokenizer

    theirs = tokenizer_spec(rec["tokenizer"])
    ours = load_tokenizer(config.tokenizer)
    if _loadable(theirs):
        ref = load_tokenizer(theirs)
        n, chat = ref.vocab_size, getattr(ref.hf, "chat_template", None) or None
        same_ids = ref.encode(_PROBE) == ours.encode(_PROBE)
    else:  # gone: compare with what was recorded
        n, chat, same_ids = rec.get("tokenizer_vocab_size"), rec.get("chat_template"), True
    chat_differs = (
        config.data.template == "chat"
        and rec.get("chat_template") is not None
        and (getattr(ours.hf, "chat_template", None) or None) != (rec.get("chat_template") or chat)
    )
    if (n is not None and n != ours.vocab_size) or not same_ids or chat_differs:
        what = (
            "another chat template"
            if chat_differs and same_ids and n == ours.vocab_size
            else f"{ours.vocab_size} tokens vs {n}"
            if n != ours.vocab_size
            else "other ids for the same text"
        )
        raise ValueError(
            f"config.tokenizer={os.fspath(config.tokenizer)!r} is not the tokenizer {theirs!r} that {where} was "
            f"trained with ({what}); leave config.tokenizer at its default to use the recorded one"
        )
