"""Dataset readers: JSONL, JSON arrays, parquet, Hugging Face datasets saved to disk, TFDS.

Every reader turns rows into *records*, plain dicts with the same keys whatever the
source::

  {"id": str, "question": str, "answer": str | None, "demonstration": str | None,
   "chosen": str | None, "rejected": str | None, "location": "file:line",
   "verifier": "math"}

Which source column feeds which key is the `FieldMap` of the `DataConfig`; the `task`
decides which keys are required (``rl``/``eval``: question + answer; ``sft``: question +
demonstration; ``hpt``: question + answer + demonstration; ``dpo``: question + chosen +
rejected). A malformed row (bad JSON, missing field, wrong type, empty demonstration,
duplicate question id) raises `DataError` naming the file and line (or row), or, with
``skip_bad_rows=True``, is skipped and counted in `ReadStats` (``stats.metrics()`` is a
dict for the training loop's metrics).

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
import glob
import hashlib
import json
import os
import re
from typing import Any, Iterator, Mapping, Sequence

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

RECORD_KEYS = ("id", "question", "answer", "demonstration", "chosen", "rejected")
# Required record keys for each use of a dataset.
TASK_FIELDS = {
    "rl": ("question", "answer"),
    "eval": ("question", "answer"),
    "sft": ("question", "demonstration"),
    "hpt": ("question", "answer", "demonstration"),
    "dpo": ("question", "chosen", "rejected"),
}
# Where one row per question is expected (the HPT gate and GRPO groups key on the id).
_DEFAULT_DUPLICATES = {"rl": "error", "eval": "error", "hpt": "error", "sft": "allow",
                       "dpo": "allow"}
FORMATS = ("auto", "jsonl", "json", "parquet", "hf_disk", "tfds")
_JSON_WS = re.compile(r"[ \t\n\r]*")


class DataError(ValueError):
    """A malformed dataset row or file; the message starts with ``file:line``."""


class _BadRow(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


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
    id: str | None = "id"


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What to read and how to check it.

    Attributes:
      path: a file, a directory (``hf_disk``), a glob, a list of those, or a TFDS name.
      format: ``auto`` (from the extension), ``jsonl``, ``json``, ``parquet``,
        ``hf_disk`` (``datasets.Dataset.save_to_disk``) or ``tfds`` (needs the ``tfds``
        extra; TensorFlow is imported only then).
      task: ``rl``, ``eval``, ``sft``, ``hpt`` or ``dpo``: which fields are required.
      fields: the `FieldMap`.
      split: split of a saved ``DatasetDict`` or of a TFDS dataset.
      skip_bad_rows: skip and count malformed rows instead of raising.
      duplicate_ids: ``error``, ``skip`` (keep the first) or ``allow``; default
        ``error`` for rl/eval/hpt and ``allow`` for sft/dpo.
      tfds_data_dir: TFDS ``data_dir``.
      verifier: the reward verifier kind stored in each record (``math``, ``exact``,
        ``choice``, ``integer``; see `upt_jax.rewards.RoutedVerifier`).
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

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}; expected one of {FORMATS}")
        if self.task not in TASK_FIELDS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {tuple(TASK_FIELDS)}")
        if self.duplicate_ids not in (None, "error", "skip", "allow"):
            raise ValueError(f"duplicate_ids must be error/skip/allow, not {self.duplicate_ids!r}")
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
    skipped_by_reason: collections.Counter = dataclasses.field(
        default_factory=collections.Counter)
    examples: list = dataclasses.field(default_factory=list)  # first skipped-row messages

    def skip(self, reason: str, message: str) -> None:
        self.rows_skipped += 1
        self.skipped_by_reason[reason] += 1
        if len(self.examples) < 10:
            self.examples.append(message)

    def metrics(self, prefix: str = "data/") -> dict[str, int]:
        out = {f"{prefix}rows_read": self.rows_read, f"{prefix}rows_kept": self.rows_kept,
               f"{prefix}rows_skipped": self.rows_skipped}
        for reason, n in sorted(self.skipped_by_reason.items()):
            out[f"{prefix}skipped/{reason}"] = n
        return out


# ----------------------------------------------------------------------------- raw rows


def _expand_paths(path: str | Sequence[str]) -> list[str]:
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    out = []
    for p in paths:
        p = os.fspath(p)
        matches = sorted(glob.glob(p)) if glob.has_magic(p) else [p]
        if not matches:
            raise FileNotFoundError(f"no file matches {p!r}")
        out.extend(matches)
    return out


def _detect_format(path: str) -> str:
    if os.path.isdir(path):
        return "hf_disk"
    lower = path.lower()
    if lower.endswith((".jsonl", ".jsonl.txt", ".ndjson")):
        return "jsonl"
    if lower.endswith(".parquet"):
        return "parquet"
    if lower.endswith(".json"):
        # Many ".json" files are really JSON lines: look at the first character.
        with open(path, "rb") as f:
            head = f.read(4096).lstrip()
        return "json" if head.startswith(b"[") else "jsonl"
    raise DataError(f"{path}: cannot tell the format from the name; set DataConfig.format")


def _iter_jsonl(path: str) -> Iterator[tuple[str, Any]]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            loc = f"{path}:{lineno}"
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                yield loc, _BadRow("bad_encoding", f"{loc}: not UTF-8 ({e.reason})")
                continue
            except json.JSONDecodeError as e:
                yield loc, _BadRow("bad_json", f"{loc}: bad JSON: {e.msg} (column {e.colno})")
                continue
            yield loc, row


def _iter_json_array(path: str) -> Iterator[tuple[str, Any]]:
    """Elements of a top-level JSON array, each with the line it starts on.

    A syntax error makes the rest of the file unreadable, so it always raises.
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    decoder = json.JSONDecoder()

    def skip_ws(i):
        return _JSON_WS.match(text, i).end()

    def fail(i, msg):
        line = text.count("\n", 0, i) + 1
        col = i - (text.rfind("\n", 0, i) + 1) + 1
        raise DataError(f"{path}:{line}: bad JSON: {msg} (column {col})")

    i = skip_ws(0)
    if i >= len(text) or text[i] != "[":
        fail(i, "expected a top-level array '['")
    i = skip_ws(i + 1)
    if i < len(text) and text[i] == "]":
        return
    line, line_pos = 1, 0
    while True:
        line += text.count("\n", line_pos, i)
        line_pos = i
        try:
            row, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            fail(e.pos, e.msg)
        yield f"{path}:{line}", row
        i = skip_ws(end)
        if i < len(text) and text[i] == ",":
            i = skip_ws(i + 1)
        elif i < len(text) and text[i] == "]":
            if skip_ws(i + 1) != len(text):
                fail(skip_ws(i + 1), "extra data after the array")
            return
        else:
            fail(i, "expected ',' or ']'")


def _iter_arrow_table_batches(batches, name: str) -> Iterator[tuple[str, Any]]:
    index = 0
    for batch in batches:
        for row in batch.to_pylist():
            yield f"{name}: row {index}", row
            index += 1


def _iter_parquet(path: str) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    yield from _iter_arrow_table_batches(pq.ParquetFile(path).iter_batches(batch_size=1024),
                                         path)


def _iter_arrow_file(path: str) -> Iterator[tuple[str, Any]]:
    import pyarrow as pa

    with pa.memory_map(path) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            source.seek(0)
            reader = pa.ipc.open_file(source)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
            yield from _iter_arrow_table_batches(batches, path)
            return
        yield from _iter_arrow_table_batches(reader, path)


def _iter_hf_disk(directory: str, split: str | None) -> Iterator[tuple[str, Any]]:
    """A ``datasets.Dataset`` (or ``DatasetDict``) written by ``save_to_disk``.

    Read with pyarrow directly, so the ``datasets`` package is not needed.
    """
    dict_json = os.path.join(directory, "dataset_dict.json")
    if os.path.exists(dict_json):
        with open(dict_json) as f:
            splits = json.load(f)["splits"]
        if split is None:
            if "train" not in splits:
                raise DataError(f"{directory}: a DatasetDict with splits {splits}; set "
                                "DataConfig.split")
            split = "train"
        if split not in splits:
            raise DataError(f"{directory}: no split {split!r}; splits are {splits}")
        directory = os.path.join(directory, split)
    state_json = os.path.join(directory, "state.json")
    if os.path.exists(state_json):
        with open(state_json) as f:
            files = [os.path.join(directory, d["filename"]) for d in json.load(f)["_data_files"]]
    else:
        files = sorted(glob.glob(os.path.join(directory, "*.arrow")))
    if not files:
        raise DataError(f"{directory}: no .arrow files (expected a datasets save_to_disk "
                        "directory)")
    for path in files:
        yield from _iter_arrow_file(path)


def _to_python(x):
    """TFDS numpy values → str / int / float / list."""
    if isinstance(x, bytes):
        return x.decode("utf-8")
    if isinstance(x, dict):
        return {k: _to_python(v) for k, v in x.items()}
    if hasattr(x, "tolist"):
        return _to_python(x.tolist())
    if isinstance(x, list):
        return [_to_python(v) for v in x]
    return x


def _iter_tfds(name: str, split: str | None, data_dir: str | None) -> Iterator[tuple[str, Any]]:
    try:
        import tensorflow_datasets as tfds  # the optional `tfds` extra
    except ImportError as e:
        raise ImportError("format='tfds' needs TensorFlow Datasets: pip install "
                          "'upt_jax[tfds]'") from e
    split = split or "train"
    ds = tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False)
    for index, row in enumerate(tfds.as_numpy(ds)):
        yield f"tfds:{name}/{split}: row {index}", _to_python(row)


def read_rows(config: DataConfig) -> Iterator[tuple[str, Any]]:
    """Raw rows as ``(location, row)``; a row that could not be decoded is a `_BadRow`."""
    if config.format == "tfds":
        yield from _iter_tfds(os.fspath(config.path), config.split, config.tfds_data_dir)
        return
    for path in _expand_paths(config.path):
        fmt = config.format if config.format != "auto" else _detect_format(path)
        if fmt == "jsonl":
            yield from _iter_jsonl(path)
        elif fmt == "json":
            yield from _iter_json_array(path)
        elif fmt == "parquet":
            yield from _iter_parquet(path)
        elif fmt == "hf_disk":
            yield from _iter_hf_disk(path, config.split)
        else:
            raise ValueError(f"format {fmt!r} needs a single name, not files")


# ----------------------------------------------------------------------------- records


def _get(row: Mapping[str, Any], column: str) -> tuple[bool, Any]:
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _as_text(key: str, column: str, value: Any, loc: str) -> str:
    if isinstance(value, str):
        return value
    # Numeric answers and ids (GSM8K-style integers) are fine; bools are not numbers here.
    if key in ("answer", "id") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise _BadRow("wrong_type", f"{loc}: field {key!r} (column {column!r}) must be a string, "
                                f"got {type(value).__name__}")


def normalize_row(row: Any, loc: str, config: DataConfig) -> dict[str, Any]:
    """One source row → one record; raises `_BadRow` with a ``loc:`` message."""
    if isinstance(row, _BadRow):
        raise row
    if not isinstance(row, Mapping):
        raise _BadRow("wrong_type", f"{loc}: a row must be an object, got {type(row).__name__}")
    required = TASK_FIELDS[config.task]
    record: dict[str, Any] = {}
    for key in RECORD_KEYS:
        column = getattr(config.fields, key)
        present, value = _get(row, column) if column is not None else (False, None)
        if not present or value is None:
            if key in required:
                raise _BadRow("missing_field",
                              f"{loc}: missing field {key!r} (column {column!r})")
            record[key] = None
            continue
        record[key] = _as_text(key, column, value, loc)
    for key in required:
        if not record[key].strip():
            raise _BadRow(f"empty_{key}", f"{loc}: empty {key!r} (a {config.task} dataset "
                                          f"needs a non-empty {key})")
    if record["id"] is None:
        record["id"] = "q-" + hashlib.sha1(record["question"].encode()).hexdigest()[:16]
    record["location"] = loc
    record["verifier"] = config.verifier
    return record


def load_records(config: DataConfig) -> tuple[list[dict[str, Any]], ReadStats]:
    """Reads, checks and normalises every row of ``config``.

    Returns:
      ``(records, stats)``; records in file order.

    Raises:
      DataError: on the first malformed row (``file:line: what is wrong``), unless
        ``config.skip_bad_rows``.
    """
    duplicates = config.duplicate_ids or _DEFAULT_DUPLICATES[config.task]
    stats = ReadStats()
    records: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for loc, row in read_rows(config):
        stats.rows_read += 1
        try:
            record = normalize_row(row, loc, config)
            first = seen.get(record["id"])
            if first is not None and duplicates != "allow":
                bad = _BadRow("duplicate_id", f"{loc}: duplicate question id "
                                              f"{record['id']!r} (first at {first})")
                if duplicates == "skip":
                    stats.skip(bad.reason, str(bad))
                    continue
                raise bad
            seen.setdefault(record["id"], loc)
        except _BadRow as bad:
            if not config.skip_bad_rows:
                raise DataError(str(bad)) from None
            stats.skip(bad.reason, str(bad))
            continue
        records.append(record)
    stats.rows_kept = len(records)
    return records, stats


# ----------------------------------------------------------------------------- iteration


def make_dataset(
    records: Sequence[Any],
    *,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = 1,
    shard_index: int = 0,
    shard_count: int = 1,
    even_shards: bool = True,
    batch_size: int | None = None,
    drop_remainder: bool = False,
):
    """A deterministic, shardable, resumable grain pipeline over ``records``.

    Order: shard (``records[shard_index::shard_count]``, after truncating to a multiple
    of ``shard_count`` when ``even_shards`` so every host sees as many rows) → shuffle
    (a new permutation each epoch, a function of ``seed`` only) → repeat ``num_epochs``
    times (``None``: forever) → batch into lists of records.

    Args:
      records: any random-access sequence (a list of records, a synthetic source).

    Returns:
      A ``grain.IterDataset``. ``it = iter(ds)``; ``it.get_state()`` is a JSON-
      serialisable dict; a fresh ``iter(ds)`` after ``set_state(state)`` yields exactly
      what ``it`` would have yielded next.
    """
    import grain

    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
    ds = grain.MapDataset.source(records)
    if shard_count > 1:
        n = len(ds) - len(ds) % shard_count if even_shards else len(ds)
        ds = ds[:n][shard_index::shard_count]
    if shuffle:
        ds = ds.shuffle(seed=seed)
    if num_epochs != 1:
        ds = ds.repeat(num_epochs)
    it_ds = ds.to_iter_dataset()
    if batch_size is not None:
        it_ds = it_ds.batch(batch_size, drop_remainder=drop_remainder, batch_fn=list)
    return it_ds


def load_dataset(config: DataConfig, **dataset_kwargs):
    """`load_records` then `make_dataset`: returns ``(grain.IterDataset, ReadStats)``."""
    records, stats = load_records(config)
    return make_dataset(records, **dataset_kwargs), stats
