"""A pool of verifier worker processes with a hard time limit per item.

Why not `multiprocessing.Pool` or `concurrent.futures`: neither can kill the one worker
that is stuck in a parser (sympy on ``9^{9^{9^9}}`` can run for hours). Here each worker
owns a pipe; the parent sends one item at a time to each idle worker, waits on all pipes
and process sentinels at once, and

- a worker past the time limit is killed (SIGKILL) and replaced; its item gets
  ``Reward(0, "timeout")``;
- a worker that dies (segfault, out of memory under the address-space limit) is
  replaced; its item gets ``Reward(0, "worker_died")``;
- an exception inside the verifier gives ``Reward(0, "error", detail=<type>)``.

Workers die with the process that owns the pool, however it ends (SIGKILL included): each
watches a lifeline pipe whose only write end the owner holds, and runs each item under a
kernel-enforced CPU-time backstop (see `upt_jax.rewards._worker`). The forkserver and the
resource tracker then exit too (they live while any worker holds their pipes).

Workers are started with ``forkserver`` (``spawn`` where it is unavailable), never
``fork``: the trainer has JAX initialised. The forkserver preloads the verifier modules
(sympy, math-verify) once, so replacing a killed worker takes milliseconds. Workers do
not re-import the parent's ``__main__`` (so a script without an
``if __name__ == "__main__":`` guard is not re-run in them); the functions they run
must therefore live in importable modules, not in the main script.

Example::

  >>> from upt_jax.rewards import math_equiv
  >>> with VerifierPool(num_workers=2, timeout_s=2.0) as pool:
  ...   rewards = pool.map(math_equiv.math_equivalent, [("1/2", "0.5"), ("2", "3")])
  >>> [r.reason for r in rewards]
  ['correct', 'wrong']

Not thread-safe: one thread drives a pool.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import sys
import time
import types
import weakref
from typing import Any, Callable, Mapping, Sequence

from upt_jax.rewards import _worker
from upt_jax.rewards.types import Reward

__all__ = ["VerifierPool", "DEFAULT_PRELOAD"]

# Imported by every worker (and by the forkserver once) before it reports ready.
DEFAULT_PRELOAD = ("math_verify", "upt_jax.rewards.math_equiv")
# A worker that dies this many times in a row before becoming ready is a setup error.
_MAX_STARTUP_FAILURES = 3


@dataclasses.dataclass
class _Worker:
    process: Any
    conn: Any
    ready: bool = False
    task: int | None = None  # index of the item being scored
    started: float = 0.0  # monotonic time the item was sent


@contextlib.contextmanager
def _main_module_hidden():
    """Starts workers without the parent's ``__main__``.

    ``spawn``/``forkserver`` children normally re-import the parent's main script (as
    ``__mp_main__``), which re-runs a training script that lacks an
    ``if __name__ == "__main__":`` guard, and fails for ``python - < script``. The
    workers need nothing from it (their target lives in `upt_jax.rewards._worker`), so
    while a worker is being started ``__main__`` is a blank module.
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is None:
            del sys.modules["__main__"]
        else:
            sys.modules["__main__"] = main


def _kill(worker: _Worker) -> None:
    try:
        worker.process.kill()
    except (OSError, AttributeError, ValueError):
        pass
    worker.process.join(timeout=5.0)
    try:
        worker.conn.close()
    except OSError:
        pass


def _shutdown(workers: list[_Worker], lifeline=()) -> None:
    for w in workers:
        try:
            w.conn.send(None)
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + 1.0
    for w in workers:
        w.process.join(timeout=max(0.0, deadline - time.monotonic()))
        if w.process.is_alive():
            _kill(w)
        else:
            try:
                w.conn.close()
            except OSError:
                pass
    workers.clear()
    for conn in lifeline:
        conn.close()


class VerifierPool:
    """Worker processes that score items under a per-item time limit.

    Args:
      num_workers: number of processes (default: ``min(4, os.cpu_count())``).
      timeout_s: wall-clock limit per item, from the moment it is sent to a worker.
      start_method: ``"forkserver"`` (default where available) or ``"spawn"``.
      memory_limit_mb: address-space limit of each worker (``None``: no limit); a
        worker hitting it fails its item (``error`` or ``worker_died``), never the host.
      preload: modules every worker imports before it takes work.
    """

    def __init__(
        self,
        num_workers: int | None = None,
        timeout_s: float = 5.0,
        *,
        start_method: str | None = None,
        memory_limit_mb: int | None = 4096,
        preload: Sequence[str] = DEFAULT_PRELOAD,
    ):
        if start_method is None:
            methods = multiprocessing.get_all_start_methods()
            start_method = "forkserver" if "forkserver" in methods else "spawn"
        if start_method == "fork":
            raise ValueError("never fork a process that may have JAX initialised; use 'forkserver' or 'spawn'")
        self.num_workers = int(num_workers or min(4, os.cpu_count() or 1))
        self.timeout_s = float(timeout_s)
        self.memory_limit_mb = memory_limit_mb
        self.preload = tuple(preload)
        self._ctx = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            # Only takes effect if this process has not started its forkserver yet.
            self._ctx.set_forkserver_preload(["upt_jax.rewards._worker", *self.preload])
        self.stats = collections.Counter()  # timeouts, deaths, restarts: for logging
        self._startup_failures = 0
        # the lifeline: workers get the read end; the write end never leaves this process, so
        # the kernel closes it (EOF in every worker) when this process dies
        self._lifeline, self._lifeline_w = self._ctx.Pipe(duplex=False)
        self._workers: list[_Worker] = [self._start() for _ in range(self.num_workers)]
        self._finalizer = weakref.finalize(self, _shutdown, self._workers, (self._lifeline, self._lifeline_w))

    # ------------------------------------------------------------------ processes

    def _start(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_worker.worker_main,
            args=(child_conn, self.memory_limit_mb, self.preload, self._lifeline),
            daemon=True,
            name="upt_jax-verifier",
        )
        with _main_module_hidden():
            process.start()
        child_conn.close()
        return _Worker(process=process, conn=parent_conn)

    def _replace(self, i: int) -> None:
        _kill(self._workers[i])
        self._workers[i] = self._start()
        self.stats["restarts"] += 1

    @property
    def processes(self) -> list:
        """The current worker processes (``multiprocessing.Process``; replaced workers are new ones)."""
        return [w.process for w in self._workers]

    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers (replaced workers get new ones)."""
        return [w.process.pid for w in self._workers]

    def close(self) -> None:
        """Stops every worker. The pool cannot be used afterwards."""
        self._finalizer()

    def __enter__(self) -> "VerifierPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ scoring

    def map(
        self,
        fn: Callable[..., Any],
        args: Sequence[tuple],
        kwargs: Mapping[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> list[Any]:
        """``[fn(*a, **kwargs) for a in args]``, in parallel, each under the time limit.

        Args:
          fn: a module-level function (pickled by reference) returning a picklable
            value, usually a `Reward`.
          args: one tuple of positional arguments per item.
          kwargs: keyword arguments shared by every item.
          timeout_s: overrides the pool's limit for this call.

        Returns:
          One result per item, in order; an item that timed out, crashed its worker or
          raised gets ``Reward(0.0, "timeout" | "worker_died" | "error")``.
        """
        if not self._workers:
            raise RuntimeError("the pool is closed")
        limit = self.timeout_s if timeout_s is None else float(timeout_s)
        kwargs = dict(kwargs or {})
        results: list[Any] = [None] * len(args)
        pending = collections.deque(range(len(args)))
        remaining = len(args)
        while remaining:
            now = time.monotonic()
            # 1. Hand items to idle, ready workers.
            for w in self._workers:
                if pending and w.ready and w.task is None:
                    i = pending.popleft()
                    try:
                        w.conn.send((i, fn, tuple(args[i]), kwargs, limit))
                    except (OSError, ValueError):  # died while idle: requeue, not its fault
                        pending.appendleft(i)
                        continue
                    w.task, w.started = i, now
            # 2. Wait for a message, a death, or the earliest deadline.
            busy = [w.started + limit for w in self._workers if w.task is not None]
            wait_s = max(0.0, min(busy) - now) if busy else 1.0
            handles = [w.conn for w in self._workers] + [w.process.sentinel for w in self._workers]
            multiprocessing.connection.wait(handles, timeout=wait_s)
            # 3. Collect results, detect deaths and timeouts.
            now = time.monotonic()
            for k, w in enumerate(self._workers):
                dead = False
                try:
                    while w.conn.poll():
                        msg = w.conn.recv()
                        if msg[0] == "ready":
                            w.ready = True
                            self._startup_failures = 0
                        else:
                            kind, i, value = msg
                            if w.task != i:
                                continue
                            results[i] = value if kind == "ok" else Reward(0.0, "error", detail=str(value))
                            if kind != "ok":
                                self.stats["errors"] += 1
                            w.task = None
                            remaining -= 1
                except (EOFError, OSError):
                    dead = True
                if not dead and not w.process.is_alive():
                    dead = True
                if dead:
                    if not w.ready:
                        self._startup_failures += 1
                        if self._startup_failures >= _MAX_STARTUP_FAILURES:
                            raise RuntimeError(
                                f"verifier workers die on start-up (exit code "
                                f"{w.process.exitcode}); check that {self.preload} import"
                            )
                    if w.task is not None:
                        results[w.task] = Reward(0.0, "worker_died")
                        remaining -= 1
                        self.stats["worker_died"] += 1
                    self._replace(k)
                elif w.task is not None and now - w.started > limit:
                    results[w.task] = Reward(0.0, "timeout")
                    remaining -= 1
                    self.stats["timeouts"] += 1
                    self._replace(k)
        return results
