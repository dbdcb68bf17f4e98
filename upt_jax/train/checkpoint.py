"""Orbax checkpoints of a ``TrainState``: asynchronous, last-k, sharded restore, integrity checked.

A checkpoint directory holds one sub-directory per saved step::

    <directory>/<step>/
        state/               TrainState: step [], params (NNX State), opt_state (optax), rng [2] uint32
                             (Orbax StandardSave: OCDBT/zarr arrays + JSON metadata; nothing pickled)
        extra/metadata       JSON: data-iterator state, resolved config, anything small
        upt_manifest.json    size and SHA-256 of every file under state/ and extra/
        commit_success.txt   Orbax's commit marker
        _CHECKPOINT_METADATA Orbax's step metadata (commit time)

**Atomicity.** Orbax writes a step into ``<step>.orbax-checkpoint-tmp`` and renames it to
``<step>`` only once every host has finished writing (on POSIX file systems; object stores use
``commit_success.txt`` written last instead), so a process killed mid-save leaves a temporary
directory that is never listed as a step. Such leftovers are logged (naming the step) and removed
when a writable ``Checkpointer`` opens the directory.

**Integrity.** The manifest is written by Orbax's ``post_finalization_callback``, which runs on the
primary host after all data is written and *before* the rename, so it is committed atomically
with the data it describes. ``restore`` checks, newest step first: the commit marker, the
manifest, then every listed file's existence, size and SHA-256, that Orbax can read the step,
and that every restored floating-point array is finite. A step failing any check is logged as a warning naming the step and the reason and the
previous step is tried; skipped steps are moved aside to ``<step>.corrupt`` (kept for inspection,
invisible to Orbax) so that the resumed run can save those steps again. When no step is usable
``CheckpointError`` lists every step with its reason. Nothing is ever unpickled: Orbax's array
format is tensorstore (OCDBT/zarr) with JSON metadata and ``extra`` is JSON.

**Bucket paths.** ``directory`` may be any path ``etils.epath.Path`` handles: local, or an object
store such as ``gs://bucket/run/checkpoints`` (through fsspec: ``pip install gcsfs`` for ``gs://``).
Every file operation here goes through ``epath``; Orbax writes the arrays with tensorstore's own
GCS driver. On an object store Orbax writes a step in place and commits it by writing
``commit_success.txt`` last, so an uncommitted save is a ``<step>`` directory without the marker:
it is never restored, and is logged and removed like a local temporary directory. The manifest
is one object PUT (atomic on object stores, no rename needed). Moving an unusable step aside is a
copy and a delete there (not atomic; a move cut short is redone, as the leftover ``<step>`` still
fails its check). Tested against a bucket emulated on local disk:
``tests/train/test_remote_paths.py``.

**Asynchronous saves.** ``save`` returns once the arrays are copied to host memory, so the
caller may donate or delete the device buffers right away; files are written, checksummed and
committed in a background thread. ``wait()`` blocks until the last save is committed (and
re-raises its error, if any); a new ``save`` waits for the previous one first.

**A failed save** (a full disk: ``ENOSPC``) raises `CheckpointSaveError`, one message naming the
step, the checkpoint directory, the error and the free space there: from ``wait()``, from the next
``save``, and from ``save_failed()``/``wait()`` as soon as the background thread has ended (the
trainer checks after every step, so it stops at the next step). Its temporary directory is
removed when the run restarts (`remove_incomplete_saves`, before the trainer's free-space check).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import orbax.checkpoint as ocp
from etils.epath import Path

from upt_jax.train.checkpoint_files import (
    COMMIT_MARKER,
    CORRUPT_SUFFIX,
    EXTRA,
    MANIFEST,
    STATE,
    TMP_SUFFIX,
    CheckpointError,
    CheckpointSaveError,
    abstract_with_shardings,
    absolute_path,
    free_space,
    incomplete_saves,
    is_primary,
    latest_checkpoint_dir,
    nonfinite_reason,
    remove_incomplete_saves,
    sync,
    tmp_step,
    verify_checkpoint,
    with_default_sharding,
    write_manifest,
)

log = logging.getLogger(__name__)

__all__ = [
    "Checkpointer",
    "CheckpointError",
    "CheckpointSaveError",
    "abstract_with_shardings",
    "restore_params",
    "latest_checkpoint_dir",
    "verify_checkpoint",
    "write_manifest",
    "incomplete_saves",
    "remove_incomplete_saves",
    "nonfinite_reason",
    "MANIFEST",
    "COMMIT_MARKER",
    "STATE",
    "EXTRA",
    "TMP_SUFFIX",
    "CORRUPT_SUFFIX",
]


def _restore_candidates(manager: ocp.CheckpointManager, directory: Path, step: int | None, checksums: bool, read):
    """``(value, step, skipped)`` from the newest readable step (or exactly ``step``).

    ``read(step)`` reads one step through Orbax. ``skipped``: ``[(step, reason)]`` of newer
    steps that failed. Raises ``CheckpointError`` if none is usable.
    """
    manager.reload()
    steps = sorted(manager.all_steps(), reverse=True)
    for tmp in incomplete_saves(directory):
        log.warning(
            "checkpoint step %s in %s: incomplete save %s (the save never committed, e.g. the "
            "process died while writing); ignored",
            tmp_step(tmp),
            directory,
            tmp.name,
        )
    if step is not None:
        if step not in steps:
            raise CheckpointError(
                f"no committed checkpoint for step {step} in {directory} (committed steps: {sorted(steps)})"
            )
        steps = [step]
    if not steps:
        raise CheckpointError(f"no checkpoint in {directory}")
    skipped = []
    for s in steps:
        reason = verify_checkpoint(directory / str(s), checksums=checksums)
        if reason is None:
            try:
                value = read(s)
            except Exception as e:  # noqa: BLE001 - every failure is reported and skipped
                first = (str(e).strip().splitlines() or [""])[0][:300]
                reason = f"Orbax could not read it ({type(e).__name__}: {first})"
            else:
                reason = nonfinite_reason(value)
                if reason is None:
                    return value, s, skipped
        if step is not None:
            raise CheckpointError(f"checkpoint step {s} in {directory} is unusable: {reason}")
        log.warning("checkpoint step %d in %s is unusable: %s; trying the previous one", s, directory, reason)
        skipped.append((s, reason))
    listing = "; ".join(f"step {s}: {r}" for s, r in skipped)
    raise CheckpointError(f"no usable checkpoint in {directory}: {listing}")


# ----------------------------------------------------------------------------- Checkpointer
class Checkpointer:
    """Saves and restores ``TrainState`` s with Orbax, two items per step.

    Items: ``state`` (the ``TrainState`` pytree: params, optimiser state, step, rng; arrays
    saved with their shardings, restorable onto any mesh) and ``extra`` (JSON: the data
    iterator's state, the resolved config, anything small).

    Args:
      directory: where the step directories live (created if missing).
      keep: how many of the newest checkpoints to keep (``None``: all).
      save_every: ``save(step, ...)`` writes when ``step % save_every == 0`` (``0``: only when
        forced).
      async_save: write in a background thread (``save`` returns after the device-to-host
        copy); otherwise ``save`` returns once the checkpoint is committed.
      checksums: record and verify SHA-256 of every file (sizes are always checked).
      read_only: never write, delete, clean up or move anything.

    Use as a context manager, or call ``close()``, so that the last save is committed.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        keep: int | None = 3,
        save_every: int = 0,
        async_save: bool = True,
        checksums: bool = True,
        read_only: bool = False,
    ):
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be >= 1 or None, not {keep}")
        if save_every < 0:
            raise ValueError(f"save_every must be >= 0, not {save_every}")
        self.directory = absolute_path(directory)
        self.keep, self.save_every, self.async_save = keep, save_every, async_save
        self.checksums, self.read_only = checksums, read_only
        self._pending_step: int | None = None
        self._in_flight = False  # a save started that wait() has not yet seen finish
        self._error: CheckpointSaveError | None = None  # the failed save's error, raised again
        self.incomplete: list[Path] = []  # temporary directories of saves that never committed
        if not read_only:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.incomplete = remove_incomplete_saves(self.directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else keep,
            save_interval_steps=0 if read_only else 1,
            create=not read_only,
            read_only=read_only,
            # remove_incomplete_saves (above) already removed them, synchronously; Orbax's own
            # cleanup runs in a thread that close() does not await, and a run stopped before its
            # first save (SIGTERM while the trainer is built) exited under it with a traceback
            cleanup_tmp_directories=False,
            # always the async checkpointer: it is the one that runs post_finalization_callback;
            # async_save=False waits for the commit inside save()
            enable_async_checkpointing=True,
            async_options=ocp.AsyncOptions(post_finalization_callback=self._write_manifest),
        )
        self._manager = ocp.CheckpointManager(self.directory, item_names=(STATE, EXTRA), options=options)

    # -- writing
    def should_save(self, step: int) -> bool:
        """Whether ``save(step, ...)`` without ``force`` writes."""
        return self.save_every > 0 and step % self.save_every == 0

    def save(self, step: int, state, extra: dict | None = None, *, force: bool = False) -> bool:
        """Save ``state`` (a ``TrainState`` or any array pytree) and ``extra`` (JSON-serialisable
        dict) as step ``step``, when ``force`` or ``should_save(step)``.

        Returns whether a save was started (``False`` too when ``step`` is already saved).
        Asynchronous when ``async_save``: the arrays are copied to host before returning.
        """
        if self.read_only:
            raise CheckpointError(f"{self.directory} was opened read-only")
        step = int(step)
        if not (force or self.should_save(step)):
            return False
        extra = {} if extra is None else extra
        try:
            json.dumps(extra, allow_nan=True)
        except (TypeError, ValueError) as e:
            raise TypeError(f"checkpoint extra must be JSON-serialisable: {e}") from e
        self.wait()  # one save in flight at a time (the manifest callback knows which step)
        if step in self._manager.all_steps():
            log.info("checkpoint step %d already saved in %s", step, self.directory)
            return False
        self._pending_step = step
        self._in_flight = True
        try:
            saved = self._manager.save(
                step,
                args=ocp.args.Composite(**{STATE: ocp.args.StandardSave(state), EXTRA: ocp.args.JsonSave(extra)}),
                force=True,
            )
        except Exception as e:  # noqa: BLE001 - a synchronous part of the save failed (no space for the directory)
            self._in_flight = False
            raise self._failed(e) from e
        if not self.async_save:
            self.wait()
        return bool(saved)

    def _write_manifest(self) -> None:
        """Orbax's post-finalisation callback (primary host, all hosts' data written, before the
        commit rename): record the files of the pending step."""
        step = self._pending_step
        if step is None or not is_primary():
            return
        tmp = self.directory / f"{step}{TMP_SUFFIX}"
        if not tmp.is_dir():  # other naming (e.g. timestamped) or commit-file mode: in place
            found = sorted(self.directory.glob(f"{step}{TMP_SUFFIX}*"))
            tmp = found[-1] if found else self.directory / str(step)
        write_manifest(tmp, step)

    def wait(self) -> None:
        """Block until the last save is committed; raise `CheckpointSaveError` if it failed
        (again on every later call: a failed save is not forgotten)."""
        if self._error is not None:
            raise self._error
        try:
            self._manager.wait_until_finished()
            self._manager.check_for_errors()
        except Exception as e:  # noqa: BLE001 - any error of the background save
            raise self._failed(e) from e
        finally:
            self._in_flight = False

    def save_failed(self) -> bool:
        """Whether the last save has failed, without blocking: ``False`` while it is still being
        written or once it committed. Cheap (no I/O): the trainer asks after every step. After
        ``True``, ``wait()`` raises the error."""
        if self._error is not None:
            return True
        if not self._in_flight or self._manager.is_saving_in_progress():
            return False
        try:
            self.wait()  # the background thread has ended: returns at once
        except CheckpointSaveError:
            return True
        return False

    def _failed(self, e: BaseException) -> CheckpointSaveError:
        """The one message a failed save gets (kept, and raised by every later ``wait``)."""
        step = self._pending_step
        tmp = self.directory / f"{step}{TMP_SUFFIX}"
        free = free_space(self.directory)
        latest = self.latest_step()
        msg = (
            f"saving checkpoint step {step} in {self.directory} failed ({type(e).__name__}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else repr(e)})"
            + (f"; {free}" if free else "")
            + ("; the last committed step is " + str(latest) if latest is not None else "; no step is committed yet")
            + f". Its unfinished files ({tmp.name}) are removed when the run restarts: free space "
            "and rerun the same command to resume"
        )
        self._error = CheckpointSaveError(msg)
        self._error.__cause__ = e
        return self._error

    # -- reading
    def all_steps(self) -> list[int]:
        """Committed steps, oldest first (not yet integrity-checked)."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest committed step, or ``None`` (``restore`` may fall back to an older one if
        this one fails its integrity check)."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def restore(self, abstract_state, step: int | None = None) -> tuple[Any, dict]:
        """``(state, extra)`` from the newest usable step, or exactly ``step``.

        ``abstract_state``: pytree of ``jax.ShapeDtypeStruct`` with shardings (see
        ``abstract_with_shardings``); arrays land directly on those devices (leaves without a
        sharding on the first local device). With ``step=None``, steps failing their integrity
        check are logged, skipped and moved aside to ``<step>.corrupt``; with a given ``step``
        a failure raises. Raises ``CheckpointError`` when nothing usable is found.
        """
        self.wait()
        abstract_state = with_default_sharding(abstract_state)

        def read(s):
            out = self._manager.restore(
                s,
                args=ocp.args.Composite(
                    **{STATE: ocp.args.StandardRestore(abstract_state), EXTRA: ocp.args.JsonRestore()}
                ),
            )
            return out[STATE], dict(out[EXTRA] or {})

        value, s, skipped = _restore_candidates(self._manager, self.directory, step, self.checksums, read)
        if skipped:
            log.warning(
                "restored checkpoint step %d from %s after skipping unusable step(s) %s",
                s,
                self.directory,
                [k for k, _ in skipped],
            )
            if not self.read_only:
                self._move_aside([k for k, _ in skipped])
        return value

    def _move_aside(self, steps: list[int]) -> None:
        if is_primary():
            for s in steps:
                src = self.directory / str(s)
                dst, n = self.directory / f"{s}{CORRUPT_SUFFIX}", 1
                while dst.exists():
                    dst, n = self.directory / f"{s}{CORRUPT_SUFFIX}-{n}", n + 1
                if src.exists():
                    src.rename(dst)  # an object store copies, then deletes
                    log.warning("moved unusable checkpoint step %d aside to %s", s, dst)
        sync("upt_checkpoint_move_aside")
        self._manager.reload()

    def close(self) -> None:
        """Wait for the last save and release Orbax's threads. A failed save raises here only if
        no ``wait``/``save``/``save_failed`` has reported it yet."""
        reported = self._error is not None
        try:
            self.wait()
        except CheckpointSaveError:
            if not reported:
                raise
        finally:
            self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Checkpointer({str(self.directory)!r}, keep={self.keep}, save_every={self.save_every}, "
            f"async_save={self.async_save})"
        )


# ----------------------------------------------------------------------------- params only
def restore_params(
    directory: str | os.PathLike,
    abstract_params,
    step: int | None = None,
    *,
    checksums: bool = True,
    return_step: bool = False,
):
    """The ``params`` of another run's checkpoint (stage hand-off: the next stage starts from
    these with a fresh optimiser). Nothing in ``directory`` is modified.

    ``abstract_params``: the params pytree (NNX ``State``) of ``ShapeDtypeStruct`` s or arrays,
    with shardings where wanted (``abstract_with_shardings``). ``step=None``: the newest usable
    step (unusable ones are logged and skipped). Only the ``state/params`` arrays are read.
    ``return_step``: return ``(params, the step restored)``.
    """
    directory = absolute_path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    target = {"params": with_default_sharding(abstract_with_shardings(abstract_params))}
    manager = ocp.CheckpointManager(
        directory,
        item_names=(STATE, EXTRA),
        options=ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False),
    )
    try:

        def read(s):
            out = manager.restore(
                s,
                args=ocp.args.Composite(
                    **{
                        STATE: ocp.args.PyTreeRestore(
                            item=target,
                            restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                            partial_restore=True,
                        )
                    }
                ),
            )
            return out[STATE]["params"]

        params, s, skipped = _restore_candidates(manager, directory, step, checksums, read)
        if skipped:
            log.warning(
                "restored params of checkpoint step %d from %s after skipping unusable step(s) %s",
                s,
                directory,
                [k for k, _ in skipped],
            )
        return (params, s) if return_step else params
    finally:
        manager.close()
