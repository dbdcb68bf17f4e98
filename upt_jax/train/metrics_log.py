"""Per-step metrics: JSONL always, TensorBoard when asked (``log.tensorboard=True``).

``metrics.jsonl`` holds one JSON object per step; on resume the lines after the restored step
are dropped (they belonged to steps that will be run again). TensorBoard event files go to
``<run_dir>/tensorboard`` through ``tensorboardX`` (``pip install upt_jax[tb]``).

The run directory may be any path ``etils.epath.Path`` handles. On a local path each step is
appended to ``metrics.jsonl``. An object store (``gs://…``) cannot append, so there each step is
written at once as its own small object ``metrics.jsonl.parts/<line index>.json`` (nothing is lost
if the process dies), and the parts are periodically folded into ``metrics.jsonl`` (one PUT of the
whole log, atomic) and deleted: when they reach an eighth of the log (at least 64 of them), on
``close`` and on resume. The log is rewritten a logarithmic number of times, so the bytes uploaded
stay a small multiple of its size. ``read_metrics`` returns ``metrics.jsonl`` followed by the parts
not yet folded in (a part whose index the log already covers, left by a crash between the fold and
the delete, is skipped); until the next fold, other readers of ``metrics.jsonl`` see it lag behind.
"""

from __future__ import annotations

import json
import logging
import math
import os

from etils import epath

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
PARTS = METRICS + ".parts"
_PART_DIGITS = 9
_FOLD_MIN = 64


def is_remote(path) -> bool:
    """Whether ``path`` is a URI (``gs://…``, ``s3://…``): an object store, not a local path."""
    return "://" in os.fspath(path) if isinstance(path, (str, os.PathLike)) else False


def _read_lines(path: epath.Path) -> list[str]:
    """The lines of a text file (``[]`` if it does not exist), each ending in a newline."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    lines = text.split("\n")  # not splitlines(): only "\n" ends a JSONL line
    if lines[-1] == "":
        lines.pop()
    return [line + "\n" for line in lines]


def _parts(run_dir: epath.Path) -> list[tuple[int, epath.Path]]:
    """``(line index, path)`` of the unfolded per-step objects of a remote log, in order."""
    root = run_dir / PARTS
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        stem = p.name.removesuffix(".json")
        if stem.isdigit():
            out.append((int(stem), p))
    return sorted(out)


def _remote_lines(run_dir: epath.Path) -> list[str]:
    """The whole remote log: ``metrics.jsonl``, then the parts it does not cover yet."""
    lines = _read_lines(run_dir / METRICS)
    for index, path in _parts(run_dir):
        if index >= len(lines):  # a lower index is already folded in (crash before the delete)
            lines.extend(_read_lines(path))
    return lines


class MetricsWriter:
    """Appends ``{"step": s, ...}`` dicts to ``<run_dir>/metrics.jsonl`` (and TensorBoard).

    ``run_dir`` may be local (each line appended) or an object-store URI (per-step part objects
    folded into ``metrics.jsonl``; see the module docstring). Call ``close`` at the end of a run.
    """

    def __init__(self, run_dir: str, *, tensorboard: bool = False):
        self.run_dir = epath.Path(run_dir)
        self.path = os.path.join(run_dir, METRICS)
        self.remote = is_remote(run_dir)
        self._lines: list[str] | None = None  # remote: the whole log, loaded on first use
        self._folded = 0  # remote: lines already in metrics.jsonl
        self._tb = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError as e:  # a clear message before any compute
                raise ImportError("log.tensorboard=True needs tensorboardX: pip install 'upt_jax[tb]'") from e
            self._tb = SummaryWriter(os.path.join(run_dir, "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """Drop the lines of steps after ``step`` (a resumed run will log them again), and a
        partial last line left by a crash mid-write (counted in the log as dropped)."""
        lines = _remote_lines(self.run_dir) if self.remote else _read_lines(epath.Path(self.path))
        if not lines and not self.remote:
            return
        keep, dropped = [], 0
        for line in lines:
            try:
                row = json.loads(line)
            except ValueError:
                dropped += 1
                continue
            if row.get("step", 0) <= step:
                keep.append(line)
        if dropped:
            log.warning("%s: dropped %d unreadable line(s) (a write cut short)", self.path, dropped)
        if self.remote:
            self._lines = keep
            self._fold()
        else:
            with epath.Path(self.path).open("w") as f:
                f.writelines(keep)

    def reset(self) -> None:
        """A fresh run: remove a stale log left by a run that never checkpointed."""
        path = epath.Path(self.path)
        if path.exists():
            path.unlink()
        if self.remote:
            (self.run_dir / PARTS).rmtree(missing_ok=True)
            self._lines, self._folded = [], 0

    def write(self, metrics: dict) -> None:
        """Log one step's metrics (and send the finite scalars to TensorBoard)."""
        line = json.dumps(metrics) + "\n"
        if self.remote:
            self._write_part(line)
        else:
            with epath.Path(self.path).open("a") as f:
                f.write(line)
        if self._tb is not None:
            step = int(metrics.get("step", 0))
            for k, v in metrics.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def _write_part(self, line: str) -> None:
        """Remote: the line as its own object now, folded into ``metrics.jsonl`` when the parts
        reach an eighth of the log."""
        if self._lines is None:  # a log this writer has not read yet: continue it
            self._lines = _remote_lines(self.run_dir)
            self._fold()
        index = len(self._lines)
        (self.run_dir / PARTS / f"{index:0{_PART_DIGITS}d}.json").write_text(line)
        self._lines.append(line)
        if len(self._lines) - self._folded >= max(_FOLD_MIN, self._folded // 8):
            self._fold()

    def _fold(self) -> None:
        """Remote: rewrite ``metrics.jsonl`` with the whole log (one atomic PUT), then delete the
        parts (a crash in between leaves parts that ``read_metrics`` skips)."""
        epath.Path(self.path).write_text("".join(self._lines))
        self._folded = len(self._lines)
        (self.run_dir / PARTS).rmtree(missing_ok=True)

    def close(self) -> None:
        """Fold a remote log's parts into ``metrics.jsonl``; close TensorBoard."""
        if self.remote and self._lines is not None and self._folded < len(self._lines):
            self._fold()
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(run_dir: str) -> list[dict]:
    """The metrics of a run directory (local or remote), one dict per step."""
    if is_remote(run_dir):
        lines = _remote_lines(epath.Path(run_dir))
    else:
        with epath.Path(run_dir, METRICS).open() as f:
            lines = list(f)
    return [json.loads(line) for line in lines if line.strip()]


def per_tier_means(prefix: str, tiers, values) -> dict[str, float]:
    """``{f"{prefix}/{tier}": mean of values[tiers == tier]}`` over the tiers present.

    Args:
      prefix: the metric's name, e.g. ``"reward"`` (→ ``reward/hmul_2x1``).
      tiers: ``[G]`` the tier of each group or row; ``None`` (records from a file) is left out.
      values: ``[G, ...]`` the values of each group (e.g. its ``[n]`` rewards); a group's values
        all count, so tiers are weighted by their samples.
    """
    import numpy as np

    out: dict[str, list] = {}
    for tier, v in zip(tiers, values):
        if tier is not None:
            out.setdefault(str(tier), []).append(np.asarray(v, np.float64).reshape(-1))
    return {f"{prefix}/{t}": float(np.concatenate(vs).mean()) for t, vs in out.items()}
