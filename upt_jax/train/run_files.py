"""The files of a run directory (local or ``gs://…``, through ``etils.epath``): where its
``model.json`` and checkpoints are (`run_root`, `checkpoints_dir`), reading ``model.json``
(`read_record`), and a shipped weights directory (``model.json`` + ``model.safetensors`` +
``record.json``: `is_weights_dir`, `verify_weights`). `upt_jax.train.run_model` writes the record
and rebuilds a run's model from it."""

from __future__ import annotations

import json
import os

from etils import epath

from upt_jax.train.run_spec import is_remote

__all__ = [
    "MODEL_FILE",
    "WEIGHTS_FILE",
    "RECORD_FILE",
    "FORMAT",
    "run_root",
    "checkpoints_dir",
    "read_json",
    "read_record",
    "absolute_path",
    "tokenizer_spec",
    "is_weights_dir",
    "file_sha256",
    "verify_weights",
]

MODEL_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"  # a weights directory (`is_weights_dir`): no checkpoints/
RECORD_FILE = "record.json"  # what a shipped model was measured at, and its weights' checksum
FORMAT = 1


def run_root(path) -> epath.Path:
    """The run directory of ``path``: ``path`` itself, or its parent when ``path`` is the run's
    ``checkpoints/`` (the parent holds ``model.json`` or ``config.json`` and ``path`` neither)."""
    p = epath.Path(str(path).rstrip("/"))
    if not ((p / MODEL_FILE).is_file() or (p / "config.json").is_file()):
        if (p.parent / MODEL_FILE).is_file() or (p.parent / "config.json").is_file():
            return p.parent
    return p


def checkpoints_dir(path) -> epath.Path:
    """The checkpoint directory of a run directory (local or ``gs://…``) or of its
    ``checkpoints/`` itself."""
    d = epath.Path(path)
    return d / "checkpoints" if (d / "checkpoints").is_dir() else d


def read_json(path: epath.Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def read_record(path) -> dict | None:
    """``model.json`` of the run directory ``path`` (or of the run whose ``checkpoints/`` it is),
    or ``None`` when the run has none (written before upt_jax recorded it)."""
    file = run_root(path) / MODEL_FILE
    record = read_json(file)
    if record is not None and record.get("format") != FORMAT:
        raise ValueError(f"{file} has format {record.get('format')!r}; this upt_jax reads format {FORMAT}")
    return record


def absolute_path(path) -> str:
    """A local path made absolute; a remote one (``gs://…``) as given."""
    path = os.fspath(path)
    return path if is_remote(path) else os.path.abspath(path)


def tokenizer_spec(spec) -> str:
    """A tokenizer as a run records it: ``"char"``, or a directory (made absolute if local)."""
    spec = os.fspath(spec)
    return "char" if spec in ("char", "builtin:char") else absolute_path(spec)


def is_weights_dir(path) -> bool:
    """``path`` is a model directory without checkpoints: ``model.json`` and ``model.safetensors``
    (HF tensor names), as `upt_jax.studies.base_model.ship_base` writes the shipped base models."""
    root = run_root(path)
    return (root / MODEL_FILE).is_file() and (root / WEIGHTS_FILE).is_file() and not (root / "checkpoints").is_dir()


def file_sha256(path) -> str:
    """The SHA-256 hex digest of the file ``path`` (local or remote)."""
    import hashlib

    h = hashlib.sha256()
    with epath.Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_weights(root) -> None:
    """Raise ``CheckpointError`` when ``<root>/record.json`` records a ``weights_sha256`` that
    ``<root>/model.safetensors`` does not have (a truncated copy, a partial download, an edit)."""
    from upt_jax.train.checkpoint import CheckpointError

    root = epath.Path(root)
    expected = (read_json(root / RECORD_FILE) or {}).get("weights_sha256")
    if expected is None:
        return
    got = file_sha256(root / WEIGHTS_FILE)
    if got != expected:
        raise CheckpointError(
            f"{root / WEIGHTS_FILE}: SHA-256 {got} differs from the {expected} that "
            f"{root / RECORD_FILE} records; the weights file is damaged or was replaced"
        )
