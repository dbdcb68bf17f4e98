"""Per-step metrics: JSONL always, TensorBoard when asked (``log.tensorboard=True``).

``metrics.jsonl`` holds one JSON object per step; on resume the lines after the restored step
are dropped (they belonged to steps that will be run again). TensorBoard event files go to
``<run_dir>/tensorboard`` through ``tensorboardX`` (``pip install upt_jax[tb]``).
"""
from __future__ import annotations

import json
import math
import os


class MetricsWriter:
    """Appends ``{"step": s, ...}`` dicts to ``<run_dir>/metrics.jsonl`` (and TensorBoard)."""

    def __init__(self, run_dir: str, *, tensorboard: bool = False):
        self.path = os.path.join(run_dir, "metrics.jsonl")
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
        if not os.path.exists(self.path):
            return
        keep, dropped = [], 0
        with open(self.path) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    dropped += 1
                    continue
                if row.get("step", 0) <= step:
                    keep.append(line if line.endswith("\n") else line + "\n")
        if dropped:
            import logging

            logging.getLogger(__name__).warning("%s: dropped %d unreadable line(s) (a write cut short)",
                                                self.path, dropped)
        with open(self.path, "w") as f:
            f.writelines(keep)

    def reset(self) -> None:
        """A fresh run: remove a stale log left by a run that never checkpointed."""
        if os.path.exists(self.path):
            os.remove(self.path)

    def write(self, metrics: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(metrics) + "\n")
        if self._tb is not None:
            step = int(metrics.get("step", 0))
            for k, v in metrics.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(run_dir: str) -> list[dict]:
    """The metrics of a run directory, one dict per step."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
