"""Answer extraction from model outputs: linear-time, bounded, no regex backtracking.

Everything here runs in the trainer process on arbitrary model output (a 1 MB string,
10,000 nested braces), so each function does a bounded amount of work: C-speed
``str.rfind`` to locate a marker, then a scan of at most ``max_chars`` characters.

- `last_boxed`: the content of the last ``\\boxed{...}`` (also ``\\fbox{...}`` and
  ``\\boxed 5``), with balanced-brace parsing (``\\{`` and ``\\}`` are escaped braces).
- `extract_answer`: `last_boxed`, then the configured fallbacks: ``"answer_is"``
  (the text after the last "answer is" / "answer:") and ``"last_number"``.
- `extract_choice`: a multiple-choice letter.
"""

from __future__ import annotations

import re

__all__ = [
    "DEFAULT_MAX_CHARS",
    "FALLBACKS",
    "last_boxed",
    "strip_math_delimiters",
    "extract_answer",
    "extract_choice",
    "parse_integer",
]

DEFAULT_MAX_CHARS = 1000
FALLBACKS = ("answer_is", "last_number")
_BOX_MARKERS = ("\\boxed", "\\fbox")
# Fallback scans look only at the tail of the output: the answer is at the end.
_TAIL = 4096
# How many trailing `\\boxed` markers to try before giving up (bounds the work on
# outputs made of thousands of unbalanced boxes).
_MAX_BOX_ATTEMPTS = 16
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_ANSWER_IS = re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*:?", re.IGNORECASE)
_INTEGER = re.compile(r"[+-]?(?:\d+|\d{1,3}(?:,\d{3})+)")


class TooLong(ValueError):
    """The answer is longer than the bound."""


def _scan_braced(text: str, start: int, max_chars: int) -> str | None:
    """Content of the brace group opening at ``text[start] == '{'``; None if unbalanced.

    Raises:
      TooLong: if the group does not close within ``max_chars`` characters.
    """
    depth, i, end = 0, start, min(len(text), start + max_chars + 2)
    while i < end:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
        i += 1
    if end < len(text):
        raise TooLong(f"answer longer than {max_chars} characters")
    return None


def last_boxed(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> str | None:
    """Content of the last complete ``\\boxed{...}`` in ``text``, or None.

    A later unbalanced ``\\boxed{`` (a truncated generation) is skipped in favour of the
    last complete one.

    Raises:
      TooLong: if the last box holds more than ``max_chars`` characters.
    """
    pos = len(text)
    for _ in range(_MAX_BOX_ATTEMPTS):
        starts = [(text.rfind(m, 0, pos), m) for m in _BOX_MARKERS]
        start, marker = max(starts)
        if start < 0:
            return None
        i = start + len(marker)
        if i < len(text) and text[i] == "{":
            content = _scan_braced(text, i, max_chars)
            if content is not None:
                return content.strip()
        elif i < len(text) and text[i] == " ":
            # `\boxed 5`: up to the next whitespace or `$`.
            j = i + 1
            end = min(len(text), j + max_chars)
            while j < end and not text[j].isspace() and text[j] != "$":
                j += 1
            if j == end and end < len(text):
                raise TooLong(f"answer longer than {max_chars} characters")
            if j > i + 1:
                return text[i + 1 : j]
        pos = start
    return None


def strip_math_delimiters(s: str) -> str:
    """Removes ``$...$``, ``\\(...\\)``, ``\\[...\\]`` wrappers and a final period."""
    s = s.strip()
    changed = True
    while changed and s:
        changed = False
        for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s, changed = s[len(left) : len(s) - len(right)].strip(), True
                break
        if s.endswith("."):
            s, changed = s[:-1].rstrip(), True
    return s


def _answer_is(text: str, max_chars: int) -> str | None:
    tail = text[-_TAIL:]
    matches = list(_ANSWER_IS.finditer(tail))
    if not matches:
        return None
    rest = tail[matches[-1].end() :].strip()
    line = rest.split("\n", 1)[0].strip().strip("*").strip()
    if not line:
        return None
    boxed = last_boxed(line, max_chars)
    if boxed is not None:
        return boxed
    line = strip_math_delimiters(line)
    if len(line) > max_chars:
        raise TooLong(f"answer longer than {max_chars} characters")
    return line or None


def _last_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text[-_TAIL:])
    return numbers[-1].replace(",", "") if numbers else None


def extract_answer(
    text: str, fallbacks: tuple[str, ...] = FALLBACKS, max_chars: int = DEFAULT_MAX_CHARS
) -> tuple[str | None, str]:
    """The final answer of a model output.

    Args:
      text: the model output.
      fallbacks: tried in order when there is no ``\\boxed{}``: ``"answer_is"``,
        ``"last_number"``. ``()`` for strict boxed-only extraction.
      max_chars: bound on the answer length.

    Returns:
      ``(answer, how)``: ``how`` is ``"boxed"``, a fallback name, ``"none"`` (answer is
      None) or ``"too_long"`` (answer is None).
    """
    try:
        boxed = last_boxed(text, max_chars)
        if boxed is not None:
            return strip_math_delimiters(boxed), "boxed"
        for name in fallbacks:
            if name == "answer_is":
                found = _answer_is(text, max_chars)
            elif name == "last_number":
                found = _last_number(text)
            else:
                raise ValueError(f"unknown fallback {name!r}; expected one of {FALLBACKS}")
            if found:
                return found, name
    except TooLong:
        return None, "too_long"
    return None, "none"


_CHOICE_KEYWORD = re.compile(r"answer|choice|option", re.IGNORECASE)
_BARE_CHOICE = re.compile(r"\(?([A-Za-z])[).:]?")


def _letter_after_keyword(tail: str, end: int) -> str | None:
    """The upper-case letter in ``answer is (B)``/``answer: B``/``option **C**`` after a
    keyword ending at ``end``: a hand-written scan (no backtracking regex)."""
    i, n = end, min(len(tail), end + 64)

    def skip_ws(i):
        while i < n and tail[i].isspace():
            i += 1
        return i

    i = skip_ws(i)
    if tail[i : i + 2].lower() == "is":
        i = skip_ws(i + 2)
    if i < n and tail[i] == ":":
        i = skip_ws(i + 1)
    while i < n and (tail[i] in "(*$" or tail[i].isspace()):
        i += 1
    if i < n and tail[i].isupper() and (i + 1 >= len(tail) or not tail[i + 1].isalnum()):
        return tail[i]
    return None


def extract_choice(text: str, choices: str = "ABCD", max_chars: int = DEFAULT_MAX_CHARS) -> str | None:
    """A multiple-choice letter: in the last ``\\boxed{}``, after "answer is"/"answer:",
    or a bare letter (optionally ``(B)``, ``B.``) as the output's last line.

    Returns:
      An upper-case letter from ``choices``, or None.
    """
    valid = set(choices.upper())

    def pick(s: str | None, any_case: bool) -> str | None:
        if s is None:
            return None
        s = strip_math_delimiters(s)
        if s.startswith("\\text{") and s.endswith("}"):
            s = s[len("\\text{") : -1]
        s = s.strip().strip("*").strip()
        m = _BARE_CHOICE.fullmatch(s) if len(s) <= 4 else None
        if m is None or not (any_case or m.group(1).isupper()):
            return None
        return m.group(1).upper() if m.group(1).upper() in valid else None

    try:
        boxed = last_boxed(text, max_chars)
    except TooLong:
        return None
    if boxed is not None:
        return pick(boxed, any_case=True)
    tail = text[-_TAIL:]
    found = None
    for m in _CHOICE_KEYWORD.finditer(tail):
        letter = _letter_after_keyword(tail, m.end())
        if letter is not None and letter.upper() in valid:
            found = letter.upper()
    if found is not None:
        return found
    last_line = tail.rstrip().rsplit("\n", 1)[-1]
    return pick(last_line, any_case=False) if len(last_line) <= 8 else None


def parse_integer(s: str | None, max_digits: int = 100) -> int | None:
    """``s`` as an integer if it is one (``"1,234"``, ``"+7"``, ``" 42 "``), else None.

    At most ``max_digits`` digits, so the conversion cost is bounded.
    """
    if s is None:
        return None
    s = strip_math_delimiters(s).replace("{,}", ",").replace("\\!", "").strip()
    if len(s) > 2 * max_digits or not _INTEGER.fullmatch(s):
        return None
    s = s.replace(",", "")
    return int(s) if len(s.lstrip("+-")) <= max_digits else None
