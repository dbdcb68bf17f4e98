"""XLA compilations counted while a run trains, and its time to the first update.

    watch = CompileWatch()              # at Trainer init: the clock starts, compiles are counted
    metrics.update(watch.step_metrics())  # after each step's update
    watch.close()

A compile is a ``/jax/core/compile/backend_compile_duration`` event of ``jax.monitoring`` (every
XLA compile of a jitted function, an eager op, a ``lower().compile()``), minus those served from
the persistent compilation cache (``/jax/compilation_cache/cache_hits``). The listeners are
process-wide: compiles of other threads of the process count too.
"""

from __future__ import annotations

import threading
import time
import weakref

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
CACHE_HIT = "/jax/compilation_cache/cache_hits"


_live: "weakref.WeakSet[CompileCounter]" = weakref.WeakSet()  # the open counters


def is_listening(counter: "CompileCounter") -> bool:
    """Whether ``counter`` is among the counters the process-wide listeners feed."""
    return counter in _live


_installed = threading.Lock()
_listening = False


def _on_duration(event: str, duration: float, **kw) -> None:
    if event == BACKEND_COMPILE:
        for c in list(_live):
            c._add(compiles=1, seconds=float(duration))


def _on_event(event: str, **kw) -> None:
    if event == CACHE_HIT:
        for c in list(_live):
            c._add(hits=1)


def _listen() -> None:
    """Register the two process-wide listeners once (on the first counter, never at import); they
    feed every open counter, so a counter that is never closed (a Trainer whose construction
    raised) stops counting when it is garbage-collected."""
    global _listening
    import jax

    with _installed:
        if not _listening:
            jax.monitoring.register_event_duration_secs_listener(_on_duration)
            jax.monitoring.register_event_listener(_on_event)
            _listening = True


class CompileCounter:
    """Counts backend compiles (``count``, their ``seconds``) and persistent-cache hits
    (``cache_hits``) from construction until ``close()``."""

    def __init__(self):
        self._lock = threading.Lock()
        self.events, self.seconds, self.cache_hits = 0, 0.0, 0
        _listen()
        _live.add(self)

    def _add(self, compiles: int = 0, seconds: float = 0.0, hits: int = 0) -> None:
        with self._lock:
            self.events += compiles
            self.seconds += seconds
            self.cache_hits += hits

    @property
    def count(self) -> int:
        """Compiles that ran XLA (cache hits excluded)."""
        return self.events - self.cache_hits

    def snapshot(self) -> tuple[int, float, int]:
        with self._lock:
            return self.count, self.seconds, self.cache_hits

    def close(self) -> None:
        _live.discard(self)


class CompileWatch:
    """A ``CompileCounter`` plus the clock of a run: ``step_metrics()`` gives one step's
    ``compile/count``, ``compile/seconds`` and ``compile/cache_hits`` (since the previous call;
    the first call includes the compiles of building the trainer), the run's ``compile/total``,
    and on the first call ``time/first_step_s`` (seconds from this object's construction)."""

    def __init__(self):
        self.start = time.perf_counter()
        self.counter = CompileCounter()
        self._last = (0, 0.0, 0)
        self._first = True

    def step_metrics(self) -> dict:
        now = self.counter.snapshot()
        (c0, s0, h0), self._last = self._last, now
        out = {
            "compile/count": float(now[0] - c0),
            "compile/seconds": now[1] - s0,
            "compile/cache_hits": float(now[2] - h0),
            "compile/total": float(now[0]),
        }
        if self._first:
            out["time/first_step_s"] = time.perf_counter() - self.start
            self._first = False
        return out

    def close(self) -> None:
        self.counter.close()
