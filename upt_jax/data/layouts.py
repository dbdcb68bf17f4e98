"""Row layouts a user already has, recognised without field-mapping flags.

When ``DataConfig.fields`` is left at its default, each row's layout is told from its columns
(first match wins) and the row is rewritten into the record keys (``question``, ``answer``,
``demonstration``, ``chosen``, ``rejected``, ``id``):

| layout | columns | record |
|---|---|---|
| ``native`` | ``question`` | as the `FieldMap` says (``answer``, ``demonstration``, …) |
| ``messages`` | ``messages``: ``[{"role", "content"}, …]`` | ``messages`` (the whole conversation: SFT trains on every assistant turn); ``prompt_messages`` = the turns before the last assistant turn; ``question`` = the last user turn's text; ``demonstration`` = the last assistant turn's |
| ``preference`` | ``chosen``, ``rejected`` [, ``prompt``] | ``question``/``prompt_messages`` from ``prompt``, or (TRL's implicit prompt) the turns ``chosen`` and ``rejected`` share; ``chosen``/``rejected`` = the assistant text after it |
| ``unpaired`` | ``prompt``, ``completion``, ``label`` (bool) | as ``prompt_completion``, with ``label``; an SFT dataset skips (and counts) the rows labelled ``false`` |
| ``prompt_completion`` | ``prompt``, ``completion`` | ``question`` = ``prompt``, ``demonstration`` = ``completion``; TRL's conversational form (lists of messages) also gives ``prompt_messages`` and ``messages`` = prompt + completion |
| ``prompt_only`` | ``prompt`` [, ``target``] | verl/LUFFY/HPT (OpenR1-Math-46k): ``prompt`` a chat (or a string), ``target`` the demonstration (a string or ``[{"role": "assistant", "content": …}]``) |

Every layout takes the reference answer from ``answer``, else ``reward_model.ground_truth``, else
``ground_truth`` (a one-element list such as verl's ``["72"]`` is its element). The record's
``columns`` holds the row's other top-level fields (``answer`` included), which reward functions
receive as keyword arguments (`upt_jax.rewards.functions`). A conversational prompt needs
``data.template=chat``. A malformed chat (not a list of ``{"role": str, "content": str}``) is a
bad row ``bad_messages``.
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["LAYOUTS", "detect", "canonical", "ANSWER_COLUMNS"]

LAYOUTS = ("native", "messages", "preference", "unpaired", "prompt_completion", "prompt_only")
ANSWER_COLUMNS = ("answer", "reward_model.ground_truth", "ground_truth")
# columns a layout turns into the prompt or a response (not passed on in ``columns``)
_TEXT_COLUMNS = ("messages", "prompt", "completion", "chosen", "rejected", "target", "question", "demonstration")


def detect(row: Mapping[str, Any]) -> str:
    """The layout of ``row`` (see the module table)."""
    if "question" in row:
        return "native"
    if "messages" in row:
        return "messages"
    if "chosen" in row and "rejected" in row:
        return "preference"
    if "prompt" in row and "completion" in row:
        return "unpaired" if "label" in row else "prompt_completion"
    if "prompt" in row:
        return "prompt_only"
    return "native"


class BadLayout(ValueError):
    """A row of a recognised layout whose chat is malformed; ``reason`` is the skip reason."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _turns(value: Any, where: str) -> list[dict[str, str]]:
    """``value`` checked as a chat: a non-empty list of ``{"role": str, "content": str}``."""
    if not isinstance(value, (list, tuple)) or not value:
        raise BadLayout(
            "bad_messages",
            f"{where} must be a non-empty list of {{'role', 'content'}} messages, got {type(value).__name__}",
        )
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise BadLayout("bad_messages", f"{where}[{i}] must be {{'role': str, 'content': str}}, got {m!r:.80}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _last(turns: list[dict], role: str) -> str | None:
    return next((m["content"] for m in reversed(turns) if m["role"] == role), None)


def _assistant_text(turns: list[dict]) -> str:
    """The text of the assistant turns of a completion (usually one), joined."""
    return "".join(m["content"] for m in turns if m["role"] == "assistant") or turns[-1]["content"]


def _prompt(value: Any, where: str) -> tuple[Any, list[dict] | None]:
    """``(question text, prompt turns or None)`` of a ``prompt`` value (a string or a chat)."""
    if isinstance(value, str) or value is None:
        return value, None
    turns = _turns(value, where)
    return _last(turns, "user") or turns[-1]["content"], turns


def _response(value: Any, where: str) -> tuple[Any, list[dict] | None]:
    """``(text, turns or None)`` of a completion / chosen / rejected / target value."""
    if isinstance(value, str) or value is None:
        return value, None
    turns = _turns(value, where)
    return _assistant_text(turns), turns


def _answer(row: Mapping[str, Any]) -> Any:
    for column in ANSWER_COLUMNS:
        value: Any = row
        for part in column.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if value is not None:
            if isinstance(value, (list, tuple)) and len(value) == 1:
                value = value[0]
            return value
    return None


def _shared_prefix(a: list[dict], b: list[dict]) -> list[dict]:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def canonical(row: Mapping[str, Any], loc: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(flat, extras)``: ``row`` rewritten into the record keys (``flat``: read by the default
    `FieldMap`) and what a record keeps beside them (``layout``, ``messages``,
    ``prompt_messages``, ``label``, ``columns``). Raises `BadLayout` for a malformed chat."""
    layout = detect(row)
    extras: dict[str, Any] = {"layout": layout}
    flat: dict[str, Any] = {"id": row.get("id"), "answer": _answer(row)}
    if layout == "native":
        flat = dict(row)
    elif layout == "messages":
        turns = _turns(row["messages"], f"{loc}: 'messages'")
        k = max((i for i, m in enumerate(turns) if m["role"] == "assistant"), default=None)
        prompt = turns if k is None else turns[:k]
        if not prompt:
            raise BadLayout("bad_messages", f"{loc}: 'messages' starts with an assistant turn: no prompt")
        flat.update(
            question=_last(prompt, "user") or prompt[-1]["content"],
            demonstration=None if k is None else turns[k]["content"],
        )
        extras.update(prompt_messages=prompt, messages=turns if k is not None else None)
    elif layout == "preference":
        chosen, chosen_turns = _response(row["chosen"], f"{loc}: 'chosen'")
        rejected, rejected_turns = _response(row["rejected"], f"{loc}: 'rejected'")
        question, prompt_turns = _prompt(row.get("prompt"), f"{loc}: 'prompt'")
        if "prompt" not in row:  # TRL's implicit prompt: the turns both conversations share
            if chosen_turns is None or rejected_turns is None:
                raise BadLayout(
                    "missing_field",
                    f"{loc}: a preference row without 'prompt' needs 'chosen' and "
                    "'rejected' as conversations that share their prompt turns",
                )
            prompt_turns = _shared_prefix(chosen_turns, rejected_turns)
            if not prompt_turns:
                raise BadLayout("bad_messages", f"{loc}: 'chosen' and 'rejected' share no prompt turns")
            question = _last(prompt_turns, "user") or prompt_turns[-1]["content"]
            chosen = _assistant_text(chosen_turns[len(prompt_turns) :] or chosen_turns[-1:])
            rejected = _assistant_text(rejected_turns[len(prompt_turns) :] or rejected_turns[-1:])
        flat.update(question=question, chosen=chosen, rejected=rejected)
        extras.update(prompt_messages=prompt_turns)
    else:  # unpaired, prompt_completion, prompt_only
        question, prompt_turns = _prompt(row["prompt"], f"{loc}: 'prompt'")
        column = "target" if layout == "prompt_only" else "completion"
        demo, demo_turns = _response(row.get(column), f"{loc}: {column!r}")
        flat.update(question=question, demonstration=demo)
        if layout == "unpaired":  # KTO reads the completion and its label; an SFT dataset the demonstration
            flat.update(completion=demo, label=row["label"])
        conversation = prompt_turns + demo_turns if prompt_turns is not None and demo_turns is not None else None
        extras.update(prompt_messages=prompt_turns, messages=conversation)
        if layout == "unpaired":
            if not isinstance(row["label"], bool):
                raise BadLayout("wrong_type", f"{loc}: 'label' must be true or false, got {row['label']!r:.40}")
            extras["label"] = row["label"]
    if layout != "native":
        extras["columns"] = {k: v for k, v in row.items() if k not in _TEXT_COLUMNS}
    return flat, extras
