"""Chat conversations as token rows: the loss on the assistant turns only.

A record with ``messages`` (a chat, `upt_jax.data.layouts`) is rendered with the tokenizer's chat
template turn by turn: for each assistant turn ``k``, the text of ``messages[:k]`` with the
generation prompt is a prefix of the text of ``messages[:k + 1]``, and what the second adds is the
assistant turn as the template writes it (its content and end-of-turn marker). The row is

    prompt   = everything before the first assistant turn (system, user, the assistant header)
    response = the rest, with mask 1 on every assistant turn's tokens, 0 on later user/tool turns

so a multi-turn conversation trains on every assistant turn in one row (as TRL's
``assistant_only_loss``), and a single-turn one is the prompt/demonstration row it always was.
Turns after the last assistant turn are dropped. A template for which the prefix property does
not hold (one that rewrites earlier turns, e.g. strips their reasoning) is an error naming the turn.

Each segment is encoded on its own (``add_special_tokens=False``): segment boundaries fall on the
template's markers, where a BPE tokenizer does not merge across.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from upt_jax.data.tokenizer import Tokenizer

__all__ = ["conversation_ids", "sft_example"]


def _with_system(messages: Sequence[Mapping[str, str]], system_prompt: str | None) -> list[dict]:
    messages = [dict(m) for m in messages]
    if system_prompt is not None:
        if messages and messages[0].get("role") == "system":
            messages = messages[1:]
        messages = [{"role": "system", "content": system_prompt}] + messages
    return messages


def conversation_ids(
    tok: "Tokenizer", messages: Sequence[Mapping[str, str]], *, system_prompt: str | None = None
) -> tuple[list[int], list[int], list[float]]:
    """``(prompt_ids, response_ids, response_mask)`` of a chat (see the module docstring).

    Args:
      tok: a tokenizer with a chat template.
      messages: ``[{"role", "content"}, …]`` with at least one assistant turn.
      system_prompt: replaces (or adds) the leading system message.
    Returns:
      ``response_mask`` has one float per response id: 1.0 on assistant turns, 0.0 elsewhere.
    """
    if not getattr(tok.hf, "chat_template", None):
        raise ValueError("a chat (messages) row needs a tokenizer with a chat template")
    messages = _with_system(messages, system_prompt)
    turns = [k for k, m in enumerate(messages) if m["role"] == "assistant"]
    if not turns:
        raise ValueError("a chat row to train on needs an assistant turn")

    def render(upto: int, generation: bool) -> str:
        return tok.hf.apply_chat_template(messages[:upto], tokenize=False, add_generation_prompt=generation)

    segments: list[tuple[str, float]] = []
    done = ""
    for k in turns:
        head, full = render(k, True), render(k + 1, False)
        if not head.startswith(done) or not full.startswith(head):
            raise ValueError(
                f"the chat template does not render turn {k} ({messages[k]['role']}) after the "
                "turns before it unchanged, so the assistant tokens cannot be told apart; "
                "train on prompt/completion rows instead"
            )
        segments += [(head[len(done) :], 0.0), (full[len(head) :], 1.0)]
        done = full
    prompt = tok.encode(segments[0][0])
    response, mask = [], []
    for text, weight in segments[1:]:
        ids = tok.encode(text) if text else []
        response += ids
        mask += [weight] * len(ids)
    return prompt, response, mask


def sft_example(
    tok: "Tokenizer", record: Mapping[str, Any], *, template: str, system_prompt: str | None = None
) -> tuple[list[int], list[int], list[float]]:
    """``(prompt_ids, response_ids, response_mask)`` of one SFT record: a chat record (``messages``)
    by `conversation_ids` (needs ``template="chat"``); else the prompt of its ``question`` (or chat
    prompt) under ``template`` and ``demonstration ⧺ EOS``, every response token trained on."""
    from upt_jax.data.templates import prompt_ids

    if record.get("messages"):
        if template != "chat":
            raise ValueError(
                f"record {record.get('id')} ({record.get('location')}) is a chat (messages); "
                f"set data.template=chat (not {template!r}) to render it with the chat template"
            )
        return conversation_ids(tok, record["messages"], system_prompt=system_prompt)
    demo = record.get("demonstration")
    if not demo:
        raise ValueError(f"record {record.get('id')} ({record.get('location')}) has no demonstration to train on")
    response = tok.encode(demo) + [tok.eos_id]
    return prompt_ids(tok, record, template, system_prompt=system_prompt), response, [1.0] * len(response)
