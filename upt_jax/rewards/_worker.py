"""The verifier worker process: the main loop run by each `VerifierPool` worker.

Started with the ``forkserver`` (or ``spawn``) start method, never ``fork``: the trainer
process has JAX initialised and must not be forked. Imports nothing from JAX.

Protocol over a duplex `multiprocessing.Pipe`:
  worker → parent: ``("ready", pid)`` once, when imports are done;
  parent → worker: ``(task_id, fn, args, kwargs)`` or ``None`` (exit);
  worker → parent: ``("ok", task_id, result)`` or ``("error", task_id, exception_type)``.
Only the exception *type* is sent: printing a sympy expression from a failed comparison
can itself take unbounded time.
"""
from __future__ import annotations

import importlib
import os
import signal
import sys


def _limit_memory(memory_limit_mb: int | None) -> None:
    if not memory_limit_mb:
        return
    try:
        import resource

        limit = int(memory_limit_mb) * (1 << 20)
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):  # not available on this platform
        pass


def worker_main(conn, memory_limit_mb: int | None, preload: tuple[str, ...]) -> None:
    """Serves tasks until the pipe closes or ``None`` arrives."""
    # Ctrl-C goes to the whole process group; the parent handles it and stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _limit_memory(memory_limit_mb)
    for module in preload:
        importlib.import_module(module)
    if "sympy" in sys.modules:
        from upt_jax.rewards import math_equiv

        math_equiv.install_eval_guard()
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        task_id, fn, args, kwargs = msg
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 -- report anything, keep serving
            if isinstance(e, (SystemExit, KeyboardInterrupt)):
                raise
            try:
                conn.send(("error", task_id, type(e).__name__))
            except (OSError, ValueError):
                return
            continue
        try:
            conn.send(("ok", task_id, result))
        except (OSError, ValueError):
            return
