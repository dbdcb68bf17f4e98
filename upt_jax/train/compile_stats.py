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

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
CACHE_HIT = "/jax/compilation_cache/cache_hits"


class CompileCounter:
    """Counts backend compiles (``count``, their ``seconds``) and persistent-cache hits
    (``cache_hits``) from construction until ``close()``."""

    def __init__(self):
        import jax

        self._lock = threading.Lock()
        self.events, self.seconds, self.cache_hits = 0, 0.0, 0
        self._on_duration = self._duration
        self._on_event = self._event
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        jax.monitoring.register_event_listener(self._on_event)
        self._open = True

    def _duration(self, event: str, duration: float, **kw) -> None:
        if event == BACKEND_COMPILE:
            with self._lock:
                self.events += 1
                self.seconds += float(duration)

    def _event(self, event: str, **kw) -> None:
        if event == CACHE_HIT:
            with self._lock:
                self.cache_hits += 1

    @property
    def count(self) -> int:
        """Compiles that ran XLA (cache hits excluded)."""
        return self.events - self.cache_hits

    def snapshot(self) -> tuple[int, float, int]:
        with self._lock:
            return self.count, self.seconds, self.cache_hits

    def close(self) -> None:
        import jax

        if self._open:
            jax.monitoring.unregister_event_duration_listener(self._on_duration)
            jax.monitoring.unregister_event_listener(self._on_event)
            self._open = False


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
        out = {"compile/count": float(now[0] - c0), "compile/seconds": now[1] - s0,
               "compile/cache_hits": float(now[2] - h0), "compile/total": float(now[0])}
        if self._first:
            out["time/first_step_s"] = time.perf_counter() - self.start
            self._first = False
        return out

    def close(self) -> None:
        self.counter.close()
