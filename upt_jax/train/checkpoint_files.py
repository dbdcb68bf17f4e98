"""A checkpoint directory's files, without Orbax's manager: the manifest (size and SHA-256 of every
file of a step) written and verified, the steps present, saves that never committed, free space,
and abstract trees with shardings to restore into; the errors `Checkpointer` raises. The layout
and guarantees are described in `upt_jax.train.checkpoint`."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time

import jax
import orbax.checkpoint as ocp
from etils import epath
from etils.epath import Path

from upt_jax.train.metrics_log import is_remote

log = logging.getLogger(__name__)


__all__ = [
    "CheckpointError",
    "CheckpointSaveError",
    "abstract_with_shardings",
    "latest_checkpoint_dir",
    "verify_checkpoint",
    "write_manifest",
    "incomplete_saves",
    "remove_incomplete_saves",
    "nonfinite_reason",
]

STATE = "state"
EXTRA = "extra"
MANIFEST = "upt_manifest.json"
COMMIT_MARKER = "commit_success.txt"  # orbax.checkpoint._src.path.atomicity_types.COMMIT_SUCCESS_FILE
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax.checkpoint._src.path.atomicity_types.TMP_DIR_SUFFIX
CORRUPT_SUFFIX = ".corrupt"
_MANIFEST_FORMAT = 1
_CHUNK = 1 << 22


class CheckpointError(RuntimeError):
    """No usable checkpoint (none saved, or every candidate failed its integrity check)."""


class CheckpointSaveError(CheckpointError):
    """A checkpoint could not be written (e.g. the disk is full); the message names the step, the
    directory, the error and the free space there."""


# ----------------------------------------------------------------------------- abstract trees
def abstract_with_shardings(tree, shardings=None):
    """``jax.ShapeDtypeStruct`` pytree to restore into, with shardings.

    ``tree``: arrays or ``ShapeDtypeStruct`` s (e.g. a ``TrainState`` or ``jax.eval_shape`` of
    one). ``shardings``: a pytree of ``Sharding`` s with ``tree`` 's structure (as
    ``create_train_state`` returns), one ``Sharding`` for every leaf, or ``None`` to keep each
    leaf's own sharding (a ``jax.Array`` 's, or a ``ShapeDtypeStruct`` 's if it has one).
    Restoring into the result places every array directly on its devices.
    """

    def one(x, s=None):
        s = s if s is not None else getattr(x, "sharding", None)
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)

    if shardings is None:
        return jax.tree.map(one, tree)
    if isinstance(shardings, jax.sharding.Sharding):
        return jax.tree.map(lambda x: one(x, shardings), tree)
    return jax.tree.map(one, tree, shardings)


def with_default_sharding(abstract):
    """Leaves without a sharding go to the first local device (Orbax would give numpy)."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None) or device), abstract
    )


# ----------------------------------------------------------------------------- integrity
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _size(path: Path) -> int:
    """Bytes in a file (``os.stat`` locally: epath's local ``stat`` also looks up the owner's
    name, which fails for a uid without a passwd entry)."""
    return path.stat().length if is_remote(path) else os.stat(path).st_size


def _files_under(root: Path, prefix: str):
    """``(relative name, path)`` of every file below ``root`` (``iterdir`` recursion rather than
    ``walk``: fsspec's walk yields object-store paths without their ``gs://``)."""
    if not root.is_dir():
        return
    for path in root.iterdir():
        rel = f"{prefix}/{path.name}"
        if path.is_dir():
            yield from _files_under(path, rel)
        else:
            yield rel, path


def _item_files(step_dir: Path):
    for item in (STATE, EXTRA):
        yield from _files_under(step_dir / item, item)


def absolute_path(path: str | os.PathLike) -> Path:
    """``path`` as an ``epath.Path``, made absolute if local (``absolute()`` would mangle a
    ``gs://`` path)."""
    path = epath.Path(path)
    return path if is_remote(path) else path.absolute()


def write_manifest(step_dir: str | os.PathLike, step: int) -> None:
    """Write ``upt_manifest.json`` (size and SHA-256 of every file under ``state/`` and
    ``extra/``) into ``step_dir``, atomically (locally a temporary file + rename; on an object
    store one PUT)."""
    step_dir = epath.Path(step_dir)
    files = {rel: {"size": _size(path), "sha256": _sha256(path)} for rel, path in sorted(_item_files(step_dir))}
    if not any(rel.startswith(STATE + "/") for rel in files):
        raise CheckpointError(f"step {step}: no files under {step_dir / STATE} to record in the manifest")
    manifest = {
        "format": _MANIFEST_FORMAT,
        "step": int(step),
        "orbax_version": ocp.__version__,
        "time": time.time(),
        "files": files,
    }
    text = json.dumps(manifest, indent=1)
    if is_remote(step_dir):  # one object PUT: all or nothing, no rename needed
        (step_dir / MANIFEST).write_text(text)
        return
    tmp = step_dir / (MANIFEST + ".tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(step_dir / MANIFEST)


def verify_checkpoint(step_dir: str | os.PathLike, *, checksums: bool = True) -> str | None:
    """Why the committed step directory ``step_dir`` cannot be trusted, or ``None`` if it can.

    Checks Orbax's commit marker, the manifest, and every file it lists (exists, same size,
    same SHA-256 unless ``checksums=False``). Does not read the arrays through Orbax.
    """
    step_dir = epath.Path(step_dir)
    if not step_dir.is_dir():
        return f"{step_dir} is not a directory"
    if TMP_SUFFIX in step_dir.name:
        return f"{step_dir.name} is an uncommitted temporary directory (the save never finished)"
    if not (step_dir / COMMIT_MARKER).is_file():
        return f"Orbax commit marker {COMMIT_MARKER} is missing (the save was not committed)"
    try:
        manifest = json.loads((step_dir / MANIFEST).read_text())
        files = manifest["files"]
        if manifest.get("format") != _MANIFEST_FORMAT or not isinstance(files, dict):
            return f"{MANIFEST} has an unknown format"
    except FileNotFoundError:
        return f"integrity manifest {MANIFEST} is missing"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"integrity manifest {MANIFEST} is unreadable ({type(e).__name__}: {e})"
    for item in (STATE, EXTRA):
        if not (step_dir / item).is_dir():
            return f"item directory {item}/ is missing"
    for rel, want in files.items():
        path = step_dir / rel
        if not path.is_file():
            return f"file {rel} is missing"
        size = _size(path)
        if size != want["size"]:
            return f"file {rel} has {size} bytes, {want['size']} were written (truncated or overwritten)"
        if checksums and _sha256(path) != want["sha256"]:
            return f"file {rel} fails its SHA-256 check (contents changed since the save)"
    return None


# ----------------------------------------------------------------------------- helpers
def _step_dirs(directory: Path) -> list[tuple[int, Path]]:
    """Committed-looking step directories (``<int>``), oldest first."""
    if not directory.is_dir():
        return []
    out = []
    for p in directory.iterdir():
        if p.is_dir() and p.name.isdigit() and (p.name == "0" or not p.name.startswith("0")):
            out.append((int(p.name), p))
    return sorted(out)


def incomplete_saves(directory: str | os.PathLike) -> list[Path]:
    """Directories left by saves that never committed (e.g. the process was killed): temporary
    ``<step>.orbax-checkpoint-tmp*`` directories, and on an object store (where Orbax writes in
    place and commits with a marker file) ``<step>`` directories without the commit marker."""
    directory = epath.Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and TMP_SUFFIX in p.name]
    if is_remote(directory):
        found += [p for _, p in _step_dirs(directory) if not (p / COMMIT_MARKER).is_file()]
    return sorted(found)


def tmp_step(path: Path) -> str:
    return path.name.split(TMP_SUFFIX)[0]


def remove_incomplete_saves(directory: str | os.PathLike) -> list[Path]:
    """Log and remove what `incomplete_saves` finds in ``directory`` (the primary process
    removes, every process waits for it); returns what was found. A writable `Checkpointer`
    does this when it opens; the trainer calls it earlier, before its free-space check, so that
    a save that failed on a full disk does not keep its own space and block the rerun."""
    directory = absolute_path(directory)
    found = incomplete_saves(directory)
    for tmp in found:
        log.warning(
            "checkpoint step %s in %s: incomplete save %s (the save never committed: the process "
            "died or the write failed); removing it",
            tmp_step(tmp),
            directory,
            tmp.name,
        )
    if found and is_primary():
        for tmp in found:
            tmp.rmtree(missing_ok=True)
    if found:
        sync("upt_checkpoint_remove_incomplete")
    return found


def free_space(directory: Path) -> str:
    """``"N MiB free on <directory>"`` locally; empty on an object store or when unknown."""
    if is_remote(directory):
        return ""
    import shutil

    probe = Path(directory)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return f"{shutil.disk_usage(probe).free / 2**20:.1f} MiB free on {directory}"
    except OSError:
        return ""


def latest_checkpoint_dir(directory: str | os.PathLike, *, checksums: bool = False) -> Path | None:
    """The newest step directory under ``directory`` that passes ``verify_checkpoint``, or
    ``None``. ``checksums=False`` (default) checks sizes only, which is cheap."""
    for _, path in reversed(_step_dirs(epath.Path(directory))):
        if verify_checkpoint(path, checksums=checksums) is None:
            return path
    return None


def is_primary() -> bool:
    return jax.process_index() == 0


def sync(name: str) -> None:
    if jax.process_count() > 1:
        from orbax.checkpoint import multihost

        multihost.sync_global_processes(name)


def nonfinite_reason(tree) -> str | None:
    """``None`` when every floating-point array of ``tree`` is finite, else a reason naming how many
    arrays hold NaN/inf and the first one's path (a checkpoint written before the update step's
    finiteness check, or by another program, is never resumed from silently)."""
    import jax.numpy as jnp

    flat = [
        (p, x)
        for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    if not flat:
        return None
    finite = jax.device_get(jax.jit(lambda xs: [jnp.all(jnp.isfinite(x)) for x in xs])([x for _, x in flat]))
    bad = [jax.tree_util.keystr(p) for (p, _), ok in zip(flat, finite) if not ok]
    if not bad:
        return None
    return f"restored values are not finite ({len(bad)} of {len(flat)} arrays hold NaN or inf, e.g. {bad[0]})"
