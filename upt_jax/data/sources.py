"""Where dataset rows come from: JSONL, JSON arrays, parquet, Hugging Face datasets saved to disk
(read with pyarrow: the ``datasets`` package is not needed), TFDS.

`read_rows` yields ``(location, row)`` pairs (``"file:line"`` or ``"file: row i"``); a row that
could not be decoded is a `_BadRow` (the caller skips or raises it); a file that cannot be read
at all or has no rows raises `DataError` naming it. `upt_jax.data.readers` turns rows into records.
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Any, Iterator, Sequence

__all__ = ["DataError", "FORMATS", "read_rows"]

FORMATS = ("auto", "jsonl", "json", "parquet", "hf_disk", "tfds")
_JSON_WS = re.compile(r"[ \t\n\r]*")


class DataError(ValueError):
    """A malformed dataset row or file; the message starts with ``file:line``."""


class _BadRow(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


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
            except RecursionError:
                yield loc, _BadRow("too_deep", f"{loc}: nested too deeply to parse (beyond Python's recursion limit)")
                continue
            yield loc, row


def _iter_json_array(path: str) -> Iterator[tuple[str, Any]]:
    """Elements of a top-level JSON array, each with the line it starts on.

    A syntax error, bad UTF-8 or nesting too deep to parse makes the rest of the file
    unreadable, so it always raises (naming the line).
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 ({e.reason}); a JSON array cannot be read past it") from None
    del data
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
        except RecursionError:
            raise DataError(
                f"{path}:{line}: nested too deeply to parse (beyond Python's "
                "recursion limit); a JSON array cannot be read past it"
            ) from None
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


def _unreadable(path: str, kind: str, error: BaseException, row: int | None = None) -> DataError:
    """A whole-file error: corrupt files are not skipped (what follows is unknown)."""
    at = "" if not row else f" from row {row} on"
    return DataError(f"{path}: cannot read this {kind} file{at}: {type(error).__name__}: {error}")


def _iter_arrow_table_batches(batches, name: str, kind: str) -> Iterator[tuple[str, Any]]:
    import pyarrow as pa

    index = 0
    batches = iter(batches)
    while True:
        try:
            batch = next(batches, None)
            if batch is None:
                return
            rows = batch.to_pylist()
        except (pa.ArrowException, OSError, RecursionError) as e:
            raise _unreadable(name, kind, e, index) from None
        for row in rows:
            yield f"{name}: row {index}", row
            index += 1


def _iter_parquet(path: str) -> Iterator[tuple[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
    except (pa.ArrowException, OSError) as e:
        raise _unreadable(path, "parquet", e) from None
    yield from _iter_arrow_table_batches(batches, path, "parquet")


def _iter_arrow_file(path: str) -> Iterator[tuple[str, Any]]:
    import pyarrow as pa

    try:
        source = pa.memory_map(path)
    except (pa.ArrowException, OSError) as e:
        raise _unreadable(path, "Arrow", e) from None
    with source:
        try:
            batches = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            source.seek(0)
            try:
                reader = pa.ipc.open_file(source)
            except (pa.ArrowException, OSError) as e:
                raise _unreadable(path, "Arrow", e) from None
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        except (pa.ArrowException, OSError) as e:
            raise _unreadable(path, "Arrow", e) from None
        yield from _iter_arrow_table_batches(batches, path, "Arrow")


def _read_json_file(path: str, key: str) -> Any:
    """``json.load(path)[key]`` of a metadata file, or a `DataError` naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)[key]
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(
            f"{path}: not a datasets metadata file ({type(e).__name__}: {e}); expected a save_to_disk directory"
        ) from None


def _iter_hf_disk(directory: str, split: str | None) -> Iterator[tuple[str, Any]]:
    """A ``datasets.Dataset`` (or ``DatasetDict``) written by ``save_to_disk``.

    Read with pyarrow directly, so the ``datasets`` package is not needed.
    """
    dict_json = os.path.join(directory, "dataset_dict.json")
    if os.path.exists(dict_json):
        splits = _read_json_file(dict_json, "splits")
        if split is None:
            if "train" not in splits:
                raise DataError(f"{directory}: a DatasetDict with splits {splits}; set DataConfig.split")
            split = "train"
        if split not in splits:
            raise DataError(f"{directory}: no split {split!r}; splits are {splits}")
        directory = os.path.join(directory, split)
    state_json = os.path.join(directory, "state.json")
    if os.path.exists(state_json):
        try:
            files = [os.path.join(directory, d["filename"]) for d in _read_json_file(state_json, "_data_files")]
        except (KeyError, TypeError) as e:
            raise DataError(f"{state_json}: malformed _data_files ({type(e).__name__}: {e})") from None
    else:
        files = sorted(glob.glob(os.path.join(directory, "*.arrow")))
    if not files:
        raise DataError(f"{directory}: no .arrow files (expected a datasets save_to_disk directory)")
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
        raise ImportError("format='tfds' needs TensorFlow Datasets: pip install 'upt_jax[tfds]'") from e
    split = split or "train"
    ds = tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False)
    for index, row in enumerate(tfds.as_numpy(ds)):
        yield f"tfds:{name}/{split}: row {index}", _to_python(row)


def _nonempty(rows: Iterator[tuple[str, Any]], name: str, what: str):
    """``rows``, then a `DataError` naming ``name`` if there were none (a truncated
    download or a wrong path pattern, not a dataset)."""
    empty = True
    for item in rows:
        empty = False
        yield item
    if empty:
        raise DataError(f"{name}: no rows (an empty {what}); fix or remove it from DataConfig.path")


def read_rows(config: DataConfig) -> Iterator[tuple[str, Any]]:
    """Raw rows as ``(location, row)``; a row that could not be decoded is a `_BadRow`.

    Raises:
      DataError: for a file that cannot be read at all or has no rows, naming it.
    """
    if config.format == "tfds":
        name, split = os.fspath(config.path), config.split or "train"
        yield from _nonempty(_iter_tfds(name, split, config.tfds_data_dir), f"tfds:{name}/{split}", "dataset")
        return
    for path in _expand_paths(config.path):
        fmt = config.format if config.format != "auto" else _detect_format(path)
        if fmt == "jsonl":
            rows = _iter_jsonl(path)
        elif fmt == "json":
            rows = _iter_json_array(path)
        elif fmt == "parquet":
            rows = _iter_parquet(path)
        elif fmt == "hf_disk":
            rows = _iter_hf_disk(path, config.split)
        else:
            raise ValueError(f"format {fmt!r} needs a single name, not files")
        yield from _nonempty(rows, path, "dataset" if fmt == "hf_disk" else "file")
