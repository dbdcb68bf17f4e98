"""The verifier worker process: the main loop run by each `VerifierPool` worker.

Started with the ``forkserver`` (or ``spawn``) start method, never ``fork``: the trainer
process has JAX initialised and must not be forked. Imports nothing from JAX.

Protocol over a duplex `multiprocessing.Pipe`:
  worker → parent: ``("ready", pid)`` once, when imports are done;
  parent → worker: ``(task_id, fn, args, kwargs, limit_s)`` or ``None`` (exit);
  worker → parent: ``("ok", task_id, result)`` or ``("error", task_id, exception_type)``.
Only the exception *type* is sent: printing a sympy expression from a failed comparison
can itself take unbounded time.

**A worker dies with its pool's owner.** The parent enforces the time limit; once the parent
is gone (SIGKILL, a crash, ``os._exit``), nothing would stop a worker stuck on a hung item, and
the worker would also keep the forkserver and multiprocessing's resource tracker alive (each
child holds their pipes: they exit when the last child does). So every worker:

- watches a *lifeline*, the read end of a pipe whose only write end is in the parent: the
  kernel closes it when the parent dies, however it dies, and a watchdog thread then ends the
  worker at once (``PR_SET_PDEATHSIG`` would not do: a forkserver worker's parent is the
  forkserver, which the hung worker itself keeps alive);
- runs each item under a CPU-time limit (``RLIMIT_CPU`` soft limit: twice the item's time
  limit plus one second from now), a backstop enforced by the kernel for a hang that holds the
  GIL in C code (a huge integer power), where the watchdog thread cannot run;
- ignores SIGINT and SIGTERM, which a terminal or a scheduler sends to the whole process group
  or job step: the parent decides when its workers stop (see `upt_jax.train.preemption`).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading


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


def _watch_lifeline(lifeline) -> None:
    """Ends this process as soon as ``lifeline`` (a `multiprocessing.connection.Connection`
    whose only write end is in the parent) reaches EOF, i.e. when the parent has died."""

    def watch():
        try:
            while True:
                lifeline.recv()  # the parent never writes: returns only at EOF (raises)
        except (EOFError, OSError):
            pass
        os._exit(1)

    threading.Thread(target=watch, name="upt_jax-verifier-lifeline", daemon=True).start()


def _cpu_budget(limit_s: float | None) -> None:
    """Soft ``RLIMIT_CPU`` at this process's CPU time so far plus ``2 × limit_s + 1`` seconds
    (beyond it the kernel sends SIGXCPU, which ends the process); ``None``: unlimited."""
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = resource.RLIM_INFINITY
        if limit_s is not None:
            used = resource.getrusage(resource.RUSAGE_SELF)
            soft = int(used.ru_utime + used.ru_stime + 2 * float(limit_s) + 1) + 1
            if hard != resource.RLIM_INFINITY:
                soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    except (ImportError, ValueError, OSError):  # not available on this platform
        pass


def worker_main(conn, memory_limit_mb: int | None, preload: tuple[str, ...], lifeline=None) -> None:
    """Serves tasks until the pipe closes or ``None`` arrives; ends when ``lifeline`` closes."""
    # Ctrl-C goes to the whole process group, a scheduler's SIGTERM often to the whole job
    # step; the parent handles them and stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if lifeline is not None:
        _watch_lifeline(lifeline)
    try:  # a worker ended by SIGXCPU (the CPU backstop) leaves no core file
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    except (ImportError, ValueError, OSError):
        pass
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
        task_id, fn, args, kwargs, limit_s = msg
        _cpu_budget(limit_s)
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
