"""Stopping on SIGTERM / SIGINT: finish the current step, save a checkpoint, exit 0.

SIGTERM is the preemption notice of SLURM (``scancel``, the time limit, a preempting job),
Kubernetes and Cloud TPU VMs, followed after a grace period by SIGKILL; SIGINT is Ctrl-C. While
`stop_signals` is active (``upt train`` and ``upt pipeline`` hold it for the whole command, and
`upt_jax.train.trainer.train` and ``Trainer.run`` open it too), either signal only *records* a
stop request; ``Trainer.run`` sees it after the current step, saves that step, waits for the save
to commit and raises `Preempted`, which the command line reports in one line and exits 0.
Rerunning the same command resumes from that step.

- **A second signal exits at once** (``os._exit(128 + signum)``, no save): for a hung save, or
  when you really mean it.
- **The grace period** (``config.checkpoint.preemption_grace_s``, counted from the first signal):
  a step and a save that have not finished by then end the process with ``128 + signum`` and a
  message; the last committed checkpoint is what a rerun resumes from. Set it a little below the
  scheduler's own (SLURM ``KillWait``, Kubernetes ``terminationGracePeriodSeconds``).
- **During an XLA compile** nothing is interrupted: the C-level handler only writes the signal's
  number to a pipe (``signal.set_wakeup_fd``) and a watcher thread records it (jaxlib releases
  the GIL while compiling, so the watcher runs even then); nothing is raised into the compiler
  (a ``KeyboardInterrupt`` raised around a compile once ended in a segfault).
- **Several processes** (``jax.distributed``): each step every process all-gathers its stop
  request (``Trainer._stop_request``, one tiny collective per step, only when
  ``jax.process_count() > 1``), so all of them stop after the same step and save the same step;
  none is left waiting in a collective the others abandoned.

Handlers are installed only in the main thread and only while a `stop_signals` block is active;
the previous handlers (Python's, or a C-level one such as JAX's preemption notifier) are restored
when the outermost block exits. Verifier workers ignore both signals and die with their owner
(`upt_jax.rewards._worker`). Light on purpose: no JAX import.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

__all__ = ["Preempted", "stop_signals", "signal_name", "SIGNALS", "DEFAULT_GRACE_S"]

SIGNALS = (signal.SIGTERM, signal.SIGINT)
DEFAULT_GRACE_S = 120.0
_SENTINEL = 0  # written to the wakeup pipe to stop the watcher (no signal has number 0)


class Preempted(Exception):
    """Training stopped on a signal after its checkpoint was saved (or with nothing new to save).

    ``signal``: the signal's name; ``step``: the step saved (the one a rerun resumes from);
    ``history``: the metrics of the steps this call ran. ``upt train`` prints the message and exits 0.
    """

    def __init__(self, message: str, *, signal_name: str, step: int, history: list | None = None):
        super().__init__(message)
        self.signal, self.step, self.history = signal_name, step, list(history or [])


def signal_name(signum: int) -> str:
    """``"SIGTERM"`` for 15, etc."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _say(text: str) -> None:
    """One line on stderr, written directly (safe from any thread, no logging locks)."""
    try:
        os.write(2, (text.rstrip("\n") + "\n").encode(errors="replace"))
    except OSError:
        pass


class _RawAction:
    """The exact kernel disposition of a signal (``sigaction``), saved and restored byte for
    byte, so a handler installed from C (JAX's preemption notifier under ``jax.distributed``),
    which Python's ``signal.getsignal`` cannot see, is put back. Linux/glibc only; elsewhere a
    no-op (the Python-level handler is restored as usual)."""

    _SIZE = 1024  # larger than any platform's struct sigaction (152 bytes on x86-64 glibc)

    def __init__(self, signum: int):
        self.signum, self.buf, self._libc = signum, None, None
        if not sys.platform.startswith("linux"):
            return
        try:
            import ctypes

            self._libc = ctypes.CDLL(None, use_errno=True)
            buf = ctypes.create_string_buffer(self._SIZE)
            if self._libc.sigaction(signum, None, buf) == 0:
                self.buf = buf
        except (OSError, AttributeError):
            self.buf = None

    def restore(self) -> None:
        if self.buf is not None:
            self._libc.sigaction(self.signum, self.buf, None)


class _Guard:
    """The active stop-request state: what `stop_signals` yields."""

    def __init__(self, grace_s: float | None):
        self.grace_s = DEFAULT_GRACE_S if grace_s is None else float(grace_s)
        self.signum: int | None = None  # the first signal received
        self.received_at: float | None = None
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._installed = False

    # -- what the training loop reads
    @property
    def requested(self) -> int:
        """The number of the signal that asked to stop, 0 if none."""
        return self.signum or 0

    def set_grace(self, grace_s: float) -> None:
        """Set the grace period (an inner `stop_signals` that knows the config); a request that
        is already pending is timed from its signal."""
        with self._lock:
            self.grace_s = float(grace_s)
            if self._timer is not None:
                self._timer.cancel()
                self._start_timer()

    # -- signal handling
    def _start_timer(self) -> None:
        left = max(0.0, self.grace_s - (time.monotonic() - self.received_at))
        self._timer = threading.Timer(left, self._overdue)
        self._timer.daemon = True
        self._timer.start()

    def _overdue(self) -> None:
        _say(
            f"upt_jax: {signal_name(self.signum)}: the step and its checkpoint did not finish within "
            f"config.checkpoint.preemption_grace_s={self.grace_s:g} s; exiting without that save (a "
            "rerun resumes from the last committed checkpoint)"
        )
        os._exit(128 + self.signum)

    def _on_signal(self, signum: int) -> None:
        with self._lock:
            if self.signum is None:
                self.signum, self.received_at = signum, time.monotonic()
                _say(
                    f"upt_jax: {signal_name(signum)} received: stopping after the current step and saving a "
                    f"checkpoint (within {self.grace_s:g} s, config.checkpoint.preemption_grace_s); "
                    "a second signal exits at once without saving"
                )
                self._start_timer()
                return
        _say(f"upt_jax: second signal ({signal_name(signum)}): exiting now without saving")
        os._exit(128 + signum)

    def _watch(self, read_fd: int, forward_fd: int) -> None:
        """The watcher thread: every byte on the wakeup pipe is a signal's number."""
        while True:
            try:
                data = os.read(read_fd, 64)
            except InterruptedError:
                continue
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum == _SENTINEL:
                    return
                if signum in SIGNALS:
                    self._on_signal(signum)
                elif forward_fd >= 0:  # someone else's wakeup fd (an asyncio loop): pass it on
                    try:
                        os.write(forward_fd, bytes([signum]))
                    except OSError:
                        pass

    def install(self) -> None:
        read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._raw = {s: _RawAction(s) for s in SIGNALS}
        self._previous = {s: signal.getsignal(s) for s in SIGNALS}
        self._previous_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for s in SIGNALS:
            # the Python-level handler does nothing: the watcher thread acts on the wakeup byte,
            # at once, even while the main thread is inside a long C++ call (an XLA compile)
            signal.signal(s, _ignore)
        self._watcher = threading.Thread(
            target=self._watch, args=(read_fd, self._previous_wakeup), name="upt_jax-stop-signals", daemon=True
        )
        self._read_fd = read_fd
        self._watcher.start()
        self._installed = True

    def uninstall(self) -> None:
        if not self._installed:
            return
        self._installed = False
        for s in SIGNALS:
            previous = self._previous[s]
            signal.signal(s, previous if previous is not None else signal.SIG_DFL)
            self._raw[s].restore()  # exactly what was there, a C-level handler included
        signal.set_wakeup_fd(self._previous_wakeup)
        try:
            os.write(self._write_fd, bytes([_SENTINEL]))
        except OSError:
            pass
        self._watcher.join(timeout=5.0)
        os.close(self._write_fd)
        os.close(self._read_fd)
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()


def _ignore(signum, frame) -> None:
    """The Python-level handler: the watcher thread has already seen the signal."""


class _Inactive(_Guard):
    """Outside the main thread no handler can be installed: never requested."""

    def install(self) -> None:
        pass


_active: _Guard | None = None


@contextlib.contextmanager
def stop_signals(grace_s: float | None = None):
    """While active, SIGTERM and SIGINT request a stop instead of ending the process (see the
    module docstring); yields the state, whose ``requested`` is the signal's number or 0.

    Re-entrant: an inner block shares the outer one's state (and sets its grace period when
    given one). Outside the main thread nothing is installed and ``requested`` stays 0.
    """
    global _active
    if _active is not None:
        if grace_s is not None:
            _active.set_grace(grace_s)
        yield _active
        return
    if threading.current_thread() is not threading.main_thread():
        yield _Inactive(grace_s)
        return
    guard = _Guard(grace_s)
    guard.install()
    _active = guard
    try:
        yield guard
    finally:
        _active = None
        guard.uninstall()
