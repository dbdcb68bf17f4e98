"""Prompt templates: how a question becomes the text the policy continues.

Three templates:

| name    | prompt                                                          | prompt/response separator |
|---------|-----------------------------------------------------------------|---------------------------|
| `plain` | ``{question}``                                                  | ``"\\n"``                 |
| `zero`  | ``Question:\\n{question}\\nAnswer:\\nLet's think step by step.`` | ``"\\n"``                 |
| `chat`  | the tokenizer's chat template, optional system prompt           | ``""`` (the template ends with the assistant header) |

A training sequence is ``prompt + separator + response`` (see `join`); only the response
tokens are scored.

Example::

  >>> render_prompt("What is 2+3?", "zero")
  "Question:\\nWhat is 2+3?\\nAnswer:\\nLet's think step by step."
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from upt_jax.data.tokenizer import Tokenizer

__all__ = ["ZERO_TEMPLATE", "TEMPLATES", "render_prompt", "separator", "join"]

ZERO_TEMPLATE = "Question:\n{question}\nAnswer:\nLet's think step by step."
_SEPARATORS = {"plain": "\n", "zero": "\n", "chat": ""}
TEMPLATES = tuple(_SEPARATORS)


def render_prompt(
    question: str,
    template: str = "zero",
    *,
    tokenizer: "Tokenizer | None" = None,
    system_prompt: str | None = None,
) -> str:
    """The prompt text for ``question`` under ``template``.

    Args:
      question: the question text.
      template: ``"plain"``, ``"zero"`` or ``"chat"``.
      tokenizer: required for ``"chat"`` (its chat template renders the prompt).
      system_prompt: optional system message; only the ``chat`` template has one.

    Returns:
      The prompt, to be encoded with ``add_special_tokens=False`` for ``chat`` (the
      chat template already holds any BOS token).
    """
    if template == "plain":
        text = question
    elif template == "zero":
        text = ZERO_TEMPLATE.format(question=question)
    elif template == "chat":
        if tokenizer is None:
            raise ValueError("the 'chat' template needs a tokenizer")
        return tokenizer.apply_chat_template(question, system_prompt=system_prompt)
    else:
        raise ValueError(f"unknown prompt template {template!r}; expected one of {TEMPLATES}")
    if system_prompt is not None:
        raise ValueError(f"the {template!r} template has no system prompt; use 'chat'")
    return text


def separator(template: str) -> str:
    """The text inserted between the prompt and the response."""
    if template not in _SEPARATORS:
        raise ValueError(f"unknown prompt template {template!r}; expected one of {TEMPLATES}")
    return _SEPARATORS[template]


def prompt_ids(
    tokenizer: "Tokenizer", question, template: str = "zero", *, system_prompt: str | None = None
) -> list[int]:
    """Token ids of the prompt as training, sampling and evaluation all build it:
    ``render_prompt(question) + separator(template)``, encoded without special tokens.

    ``question``: the text, or a record (`upt_jax.data.readers`): its chat prompt
    (``prompt_messages``, from a ``messages`` or conversational row; needs ``template="chat"``)
    when it has one, else its ``question``."""
    if isinstance(question, Mapping):
        turns = question.get("prompt_messages")
        if turns:
            if template != "chat":
                raise ValueError(
                    f"record {question.get('id')} ({question.get('location')}) has a chat prompt; "
                    f"set data.template=chat (not {template!r}) to render it with the chat template"
                )
            return tokenizer.encode(tokenizer.apply_chat_template(turns, system_prompt=system_prompt))
        question = question["question"]
    text = render_prompt(question, template, tokenizer=tokenizer, system_prompt=system_prompt)
    return tokenizer.encode(text + separator(template))


def join(prompt: str, response: str, template: str = "zero") -> str:
    """``prompt + separator(template) + response``: the full text of a trajectory."""
    return prompt + separator(template) + response
