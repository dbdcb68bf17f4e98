"""Dataset readers: JSONL, JSON arrays, parquet, Hugging Face datasets saved to disk, TFDS.

Every reader turns rows into *records*, plain dicts with the same keys whatever the
source::

  {"id": str, "question": str, "answer": str | None, "demonstration": str | None,
   "chosen": str | None, "rejected": str | None, "completion": str | None,
   "label": bool | None, "location": "file:line", "verifier": "math"}

Which source column feeds which key is the `FieldMap` of the `DataConfig`; the `task`
decides which keys are required (``rl``/``eval``: question + answer; ``sft``: question +
demonstration; ``hpt``: question + answer + demonstration; ``dpo``: question + chosen +
rejected; ``kto``: question + completion + label, unpaired rows as TRL's ``prompt``,
``completion``, ``label``: a bool, 0/1 or ``"true"``/``"false"``, else a ``bad_label`` row). A malformed row raises `DataError` naming the file and line (or row), or, with
``skip_bad_rows=True``, is skipped and counted in `ReadStats` under its reason
(``stats.metrics()`` is a dict for the training loop's metrics):

- ``bad_json``, ``bad_encoding`` (not UTF-8, or a lone surrogate such as ``"\\ud800"``),
  ``too_deep`` (nesting beyond Python's recursion limit), ``wrong_type``, ``missing_field``,
  ``empty_<key>``, ``duplicate_id``;
- ``non_finite_answer``: ``NaN``, ``Infinity`` or an overflowing ``1e999`` JSON number, or,
  for the numeric verifiers (``math``, ``math_strict``, ``integer``), the strings ``"nan"``,
  ``"inf"``, ``"infinity"`` (any case or sign): a reference that can never be matched;
- ``non_integer_answer``: for ``verifier="integer"``, an answer the integer verifier cannot
  read (``"5.5"``, ``"1e3"``, ``"5.0"``, more than 100 digits). A float-*typed* integral
  value (``5.0`` in JSON, or a parquet float column, as pandas makes of an integer column
  with gaps) is exactly that integer and is stored as ``"5"``; beyond 2**53 a float may
  no longer be the integer that was meant, so it is a bad row;
- ``row_too_long``: more than ``max_row_chars`` characters of text in the record.

Whole-file failures (a syntax error, deep nesting or bad UTF-8 in a JSON *array*, whose
rest is then unreadable; a corrupt parquet or Arrow file; a file with no rows) always
raise `DataError` naming the file (and line where there is one). So does a dataset whose
every row was skipped.

Records then go through `make_dataset`, a grain pipeline: shard, shuffle (a fresh
permutation each epoch, from the seed), repeat, batch. Its iterator's ``get_state()`` is
a small JSON-serialisable dict; ``set_state`` resumes exactly where it was taken.

Example::

  >>> cfg = DataConfig(path="train.jsonl", task="rl",
  ...                  fields=FieldMap(question="problem", answer="solution"))
  >>> records, stats = load_records(cfg)
  >>> it = iter(make_dataset(records, seed=0, batch_size=8, num_epochs=None))
  >>> batch = next(it)            # a list of 8 records
  >>> state = it.get_state()      # goes into the checkpoint
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import os
import re
from typing import Any, Mapping, Sequence

from upt_jax.data import layouts
from upt_jax.data.dataset import make_dataset
from upt_jax.data.sources import FORMATS, DataError, _BadRow, read_rows
from upt_jax.rewards import extract

__all__ = [
    "DataError",
    "FieldMap",
    "DataConfig",
    "ReadStats",
    "TASK_FIELDS",
    "read_rows",
    "load_records",
    "make_dataset",
    "load_dataset",
]

RECORD_KEYS = ("id", "question", "answer", "demonstration", "chosen", "rejected", "completion", "label")
# Required record keys for each use of a dataset.
TASK_FIELDS = {
    "rl": ("question", "answer"),
    "eval": ("question", "answer"),
    "prompt": ("question",),  # prompts scored by reward functions (no reference needed)
    "sft": ("question", "demonstration"),
    "hpt": ("question", "answer", "demonstration"),
    "dpo": ("question", "chosen", "rejected"),
    "kto": ("question", "completion", "label"),
}
# Where one row per question is expected (the HPT gate and GRPO groups key on the id).
_DEFAULT_DUPLICATES = {
    "rl": "error",
    "eval": "error",
    "prompt": "error",
    "hpt": "error",
    "sft": "allow",
    "dpo": "allow",
    "kto": "allow",
}
_DUPLICATE_ALIASES = {"keep": "allow", "drop": "skip"}  # data.duplicates' words
# Verifier kinds whose reference is a number: for them "nan"/"inf" answers are bad rows.
_NUMERIC_VERIFIERS = ("math", "math_strict", "integer")
_NON_FINITE_WORD = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)
# Floats represent every integer up to this exactly; beyond, 1e20 may not be what was meant.
_MAX_EXACT_FLOAT_INT = 2**53


@dataclasses.dataclass(frozen=True)
class FieldMap:
    """Source column for each record key (``None``: the source has no such column).

    A dotted name (``"reward_model.ground_truth"``) reads a nested field. Without an id
    column, a record's id is a hash of its question text, so repeated questions are
    still detected as duplicates.
    """

    question: str | None = "question"
    answer: str | None = "answer"
    demonstration: str | None = "demonstration"
    chosen: str | None = "chosen"
    rejected: str | None = "rejected"
    completion: str | None = "completion"
    label: str | None = "label"
    id: str | None = "id"


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What to read and how to check it.

    Attributes:
      path: a file, a directory (``hf_disk``), a glob, a list of those, or a TFDS name.
      format: ``auto`` (from the extension), ``jsonl``, ``json``, ``parquet``,
        ``hf_disk`` (``datasets.Dataset.save_to_disk``) or ``tfds`` (needs the ``tfds``
        extra; TensorFlow is imported only then).
      task: ``rl``, ``eval``, ``prompt`` (question only), ``sft``, ``hpt``, ``dpo`` or ``kto``:
        which fields are required.
      fields: the `FieldMap`.
      split: split of a saved ``DatasetDict`` or of a TFDS dataset.
      skip_bad_rows: skip and count malformed rows instead of raising.
      duplicate_ids: ``error``, ``skip`` / ``drop`` (keep the first) or ``allow`` / ``keep``;
        default ``error`` for rl/eval/hpt and ``allow`` for sft/dpo (the trainer passes
        ``data.duplicates``, default ``keep``). Every repeat is counted (``data/duplicates``).
      tfds_data_dir: TFDS ``data_dir``.
      verifier: the reward verifier kind stored in each record (``math``, ``math_strict``,
        ``exact``, ``choice``, ``integer``; see `upt_jax.rewards.RoutedVerifier`). The
        numeric kinds also decide which answers are bad rows (see the module docstring).
      max_row_chars: the most characters of text (question, answer, demonstration,
        chosen, rejected and id together) a record may have; a longer row is a bad row
        (``row_too_long``). ``None``: no limit.
    """

    path: str | Sequence[str] = ""
    format: str = "auto"
    task: str = "rl"
    fields: FieldMap = FieldMap()
    split: str | None = None
    skip_bad_rows: bool = False
    duplicate_ids: str | None = None
    tfds_data_dir: str | None = None
    verifier: str = "math"
    max_row_chars: int | None = 1_000_000

    def __post_init__(self):
        from upt_jax.rewards.verifiers import KINDS

        if self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}; expected one of {FORMATS}")
        if self.task not in TASK_FIELDS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {tuple(TASK_FIELDS)}")
        if self.duplicate_ids not in (None, "error", "skip", "allow", "keep", "drop"):
            raise ValueError(f"duplicate_ids must be error/skip (drop)/allow (keep), not {self.duplicate_ids!r}")
        if self.verifier not in KINDS:
            raise ValueError(f"DataConfig.verifier: unknown verifier kind {self.verifier!r}; expected one of {KINDS}")
        if self.max_row_chars is not None and (
            not isinstance(self.max_row_chars, int) or isinstance(self.max_row_chars, bool) or self.max_row_chars <= 0
        ):
            raise ValueError(
                "DataConfig.max_row_chars must be a positive number of characters "
                f"or None (no limit), not {self.max_row_chars!r}"
            )
        if isinstance(self.fields, Mapping):
            object.__setattr__(self, "fields", FieldMap(**self.fields))
        for key in TASK_FIELDS[self.task]:
            if getattr(self.fields, key) is None:
                raise ValueError(f"task {self.task!r} needs a source column for {key!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DataConfig":
        """From a dict or an ``ml_collections.ConfigDict`` (``fields`` may be a dict)."""
        d = dict(d.to_dict() if hasattr(d, "to_dict") else d)
        if isinstance(d.get("fields"), Mapping):
            d["fields"] = FieldMap(**d["fields"])
        return cls(**d)


@dataclasses.dataclass
class ReadStats:
    """Counts from `load_records`; ``metrics()`` goes into the run's metrics."""

    rows_read: int = 0
    rows_kept: int = 0
    rows_skipped: int = 0
    duplicates: int = 0  # rows whose id was seen before (kept, dropped or an error, by the policy)
    skipped_by_reason: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples: list = dataclasses.field(default_factory=list)  # first skipped-row messages

    def skip(self, reason: str, message: str) -> None:
        self.rows_skipped += 1
        self.skipped_by_reason[reason] += 1
        if len(self.examples) < 10:
            self.examples.append(message)

    def metrics(self, prefix: str = "data/") -> dict[str, int]:
        out = {
            f"{prefix}rows_read": self.rows_read,
            f"{prefix}rows_kept": self.rows_kept,
            f"{prefix}rows_skipped": self.rows_skipped,
            f"{prefix}duplicates": self.duplicates,
        }
        for reason, n in sorted(self.skipped_by_reason.items()):
            out[f"{prefix}skipped/{reason}"] = n
        return out


# ----------------------------------------------------------------------------- records


def _get(row: Mapping[str, Any], column: str) -> tuple[bool, Any]:
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _as_text(key: str, column: str, value: Any, loc: str, verifier: str) -> str:
    """A field's value as text; numbers the verifier could never match are bad rows."""
    field = f"{loc}: field {key!r} (column {column!r})"
    # Numeric answers and ids (GSM8K-style integers) are fine; bools are not numbers here.
    if key in ("answer", "id") and isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise _BadRow(
                f"non_finite_{key}",
                f"{field} is not finite ({value!r}; JSON NaN, Infinity and numbers beyond 1.8e308 read so)",
            )
        if isinstance(value, float) and key == "answer" and verifier == "integer":
            if value.is_integer() and abs(value) <= _MAX_EXACT_FLOAT_INT:
                return str(int(value))  # 5.0 is exactly 5 (documented in the module)
            raise _BadRow(
                "non_integer_answer",
                f"{field} is the float {value!r}, not an integer (floats are exact "
                "integers only up to 2**53); DataConfig.verifier='integer' "
                "(data.verifier) needs an integer such as 42",
            )
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        raise _BadRow("wrong_type", f"{field} must be a string, got {type(value).__name__}")
    if key == "answer" and verifier in _NUMERIC_VERIFIERS:
        if _NON_FINITE_WORD.fullmatch(text.strip()):
            raise _BadRow(
                "non_finite_answer",
                f"{field} is not finite ({text!r}); "
                f"DataConfig.verifier={verifier!r} "
                "(data.verifier) can never match it",
            )
        if verifier == "integer" and extract.parse_integer(text) is None:
            shown = text if len(text) <= 40 else text[:40] + "..."
            raise _BadRow(
                "non_integer_answer",
                f"{field} is {shown!r}, not an integer of at most 100 digits; "
                "DataConfig.verifier='integer' (data.verifier) needs an integer "
                "such as 42 (or use verifier 'math')",
            )
    return text


def _check_text(record: dict[str, Any], loc: str, config: DataConfig) -> None:
    """Row size within ``max_row_chars``; every field valid Unicode (no lone surrogates,
    which JSON ``"\\ud800"`` escapes produce and UTF-8 cannot encode)."""
    texts = [(key, value) for key, value in record.items() if isinstance(value, str)]
    texts += [
        (f"{key}[{i}]", m["content"])
        for key, turns in record.items()
        if isinstance(turns, list)
        for i, m in enumerate(turns)
    ]
    total = sum(len(value) for _, value in texts)
    if config.max_row_chars is not None and total > config.max_row_chars:
        sizes = ", ".join(f"{key} {len(value):,}" for key, value in texts)
        raise _BadRow(
            "row_too_long",
            f"{loc}: row has {total:,} characters of text, more than "
            f"DataConfig.max_row_chars={config.max_row_chars:,} "
            f"({sizes})",
        )
    for key, value in texts:
        if value.isascii():
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise _BadRow(
                "bad_encoding",
                f"{loc}: field {key!r} (column {getattr(config.fields, key, key)!r}) is not "
                f"valid Unicode (lone surrogate U+{ord(value[e.start]):04X} at "
                f"character {e.start})",
            ) from None


def _columns(row: Mapping[str, Any], fields: FieldMap) -> dict[str, Any]:
    """The row's top-level fields other than the text a native row's `FieldMap` reads as the
    prompt and responses (``answer`` and ``id`` stay: reward functions may read them)."""
    used = {c.split(".")[0] for c in (fields.question, fields.demonstration, fields.chosen, fields.rejected) if c}
    return {k: v for k, v in row.items() if k not in used}


def _prompt_key(record: dict[str, Any]) -> str:
    """What a record's id hashes when the row has none: its question, or its chat prompt."""
    turns = record.get("prompt_messages")
    return record["question"] if not turns else json.dumps(turns, sort_keys=True, ensure_ascii=False)


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _as_label(column: str, value: Any, loc: str) -> bool:
    """KTO's label: desirable (True) or not; a bool, 0/1 or true/false/yes/no (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise _BadRow(
        "bad_label",
        f"{loc}: field 'label' (column {column!r}) is {value!r}, not a bool, 0/1 or "
        "true/false (desirable or undesirable)",
    )


def normalize_row(row: Any, loc: str, config: DataConfig) -> dict[str, Any]:
    """One source row → one record; raises `_BadRow` with a ``loc:`` message. With the default
    `FieldMap`, the row's layout (chat ``messages``, TRL prompt/completion, preferences, …) is
    recognised first (`upt_jax.data.layouts`)."""
    if isinstance(row, _BadRow):
        raise row
    if not isinstance(row, Mapping):
        raise _BadRow("wrong_type", f"{loc}: a row must be an object, got {type(row).__name__}")
    extras: dict[str, Any] = {}
    if config.fields == FieldMap():
        try:
            row, extras = layouts.canonical(row, loc)
        except layouts.BadLayout as e:
            raise _BadRow(e.reason, str(e)) from None
    required = TASK_FIELDS[config.task]
    record: dict[str, Any] = {}
    for key in RECORD_KEYS:
        column = getattr(config.fields, key)
        present, value = _get(row, column) if column is not None else (False, None)
        if not present or value is None:
            if key in required:
                raise _BadRow("missing_field", f"{loc}: missing field {key!r} (column {column!r})")
            record[key] = None
            continue
        record[key] = (
            _as_label(column, value, loc) if key == "label" else _as_text(key, column, value, loc, config.verifier)
        )
    _check_text(dict(record, **{k: v for k, v in extras.items() if k.endswith("messages")}), loc, config)
    for key in required:
        if key != "label" and not record[key].strip():
            raise _BadRow(f"empty_{key}", f"{loc}: empty {key!r} (a {config.task} dataset needs a non-empty {key})")
    extras.setdefault("columns", _columns(row, config.fields))
    record.update(extras)
    if record["id"] is None:
        record["id"] = "q-" + hashlib.sha1(_prompt_key(record).encode()).hexdigest()[:16]
    record["location"] = loc
    record["verifier"] = config.verifier
    return record


def load_records(config: DataConfig) -> tuple[list[dict[str, Any]], ReadStats]:
    """Reads, checks and normalises every row of ``config``.

    Returns:
      ``(records, stats)``; records in file order.

    Raises:
      DataError: on the first malformed row (``file:line: what is wrong``), unless
        ``config.skip_bad_rows``; on a file that cannot be read or has no rows; when no
        row is left (every row skipped).
    """
    duplicates = _DUPLICATE_ALIASES.get(config.duplicate_ids, config.duplicate_ids) or _DEFAULT_DUPLICATES[config.task]
    stats = ReadStats()
    records: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for loc, row in read_rows(config):
        stats.rows_read += 1
        try:
            record = normalize_row(row, loc, config)
            first = seen.get(record["id"])
            if first is not None:
                stats.duplicates += 1
            if first is not None and duplicates != "allow":
                bad = _BadRow("duplicate_id", f"{loc}: duplicate question id {record['id']!r} (first at {first})")
                if duplicates == "skip":
                    stats.skip(bad.reason, str(bad))
                    continue
                raise bad
            seen.setdefault(record["id"], loc)
            if config.task == "sft" and record.get("label") is False:  # an unpaired negative: not a target
                stats.skip("negative_label", f"{loc}: labelled false (an SFT dataset trains on label=true only)")
                continue
        except _BadRow as bad:
            if not config.skip_bad_rows:
                raise DataError(str(bad)) from None
            stats.skip(bad.reason, str(bad))
            continue
        records.append(record)
    stats.rows_kept = len(records)
    if not records:
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(stats.skipped_by_reason.items()))
        first = f"; first: {stats.examples[0]}" if stats.examples else ""
        raise DataError(
            f"{_describe(config.path)}: no usable rows: all {stats.rows_read} rows were skipped ({reasons}){first}"
        )
    return records, stats


def _describe(path: str | Sequence[str]) -> str:
    if isinstance(path, (str, os.PathLike)):
        return os.fspath(path)
    return ", ".join(os.fspath(p) for p in path)


def load_dataset(config: DataConfig, **dataset_kwargs):
    """`load_records` then `make_dataset`: returns ``(grain.IterDataset, ReadStats)``."""
    records, stats = load_records(config)
    return make_dataset(records, **dataset_kwargs), stats
