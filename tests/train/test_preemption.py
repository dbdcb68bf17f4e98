"""``upt_jax.train.preemption``: SIGTERM/SIGINT only record a stop request while ``stop_signals``
is active; a second signal and an expired grace period end the process at once; the previous
handlers come back, a C-level one included. Each case runs in a subprocess (signals to itself);
the trainer's use of it is tested end to end in ``test_crash.py`` and ``test_multiprocess.py``."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _python(code: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        # start from the default dispositions: an ignored SIGINT is inherited across exec, and
        # Python then installs no KeyboardInterrupt handler (the full suite's worker process once
        # passed one on, and the restored handler was, rightly, "ignore")
        preexec_fn=_default_signals,
    )


def _default_signals() -> None:
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_DFL)


PRELUDE = """
import os, signal, threading, time
from upt_jax.train import preemption

def wait_for(cond, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)
"""


def test_a_signal_is_recorded_not_acted_on_and_the_handlers_come_back():
    out = _python("""
    before = {s: signal.getsignal(s) for s in preemption.SIGNALS}
    with preemption.stop_signals(grace_s=30) as stop:
        with preemption.stop_signals(grace_s=20) as inner:  # re-entrant: one shared state
            assert inner is stop and stop.grace_s == 20 and stop.requested == 0
        seen = []
        t = threading.Thread(target=lambda: seen.append(preemption.stop_signals().__enter__().requested))
        t.start(); t.join()
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt: only a request
        wait_for(lambda: stop.requested, "the request")
        assert stop.requested == signal.SIGINT, stop.requested
        time.sleep(0.2)
    assert {s: signal.getsignal(s) for s in preemption.SIGNALS} == before
    assert seen == [0]  # outside the main thread nothing is installed
    try:
        os.kill(os.getpid(), signal.SIGINT)
        # short sleeps: should the kernel deliver the signal to another thread, the main thread's
        # next check runs the handler (one long sleep would end the process first)
        for _ in range(500):
            time.sleep(0.01)
    except KeyboardInterrupt:
        print("DEFAULT SIGINT BACK")
    """)
    assert out.returncode == 0, out.stderr
    assert "DEFAULT SIGINT BACK" in out.stdout
    assert "SIGINT received: stopping after the current step" in out.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a C-level handler through libc")
def test_a_handler_installed_from_c_is_restored():
    """JAX's preemption notifier installs its SIGTERM handler from C++, where Python's
    ``signal.getsignal`` does not see it; ``stop_signals`` puts the exact disposition back (here
    SIG_IGN set through libc: the process survives a SIGTERM afterwards)."""
    out = _python("""
    import ctypes
    libc = ctypes.CDLL(None)
    libc.signal.restype = ctypes.c_void_p
    libc.signal(signal.SIGTERM, ctypes.c_void_p(1))  # SIG_IGN, behind Python's back
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    with preemption.stop_signals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        wait_for(lambda: stop.requested, "the request")
    os.kill(os.getpid(), signal.SIGTERM)  # ignored again, as before the block
    time.sleep(0.5)
    print("SURVIVED")
    """)
    assert out.returncode == 0 and "SURVIVED" in out.stdout, (out.returncode, out.stderr)


def test_a_second_signal_exits_at_once_without_waiting_for_the_main_thread():
    """The main thread is busy in one long call (as in an XLA compile): the second signal still
    ends the process within a fraction of a second, with 128 + signum."""
    out = _python("""
    with preemption.stop_signals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        wait_for(lambda: stop.requested, "the request")
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
        t0 = time.monotonic()
        time.sleep(30)  # one blocking call; the watcher thread acts meanwhile
    print("NOT REACHED")
    """)
    assert out.returncode == 128 + 2, (out.returncode, out.stdout, out.stderr)
    assert "second signal (SIGINT): exiting now without saving" in out.stderr
    assert "NOT REACHED" not in out.stdout


def test_an_expired_grace_period_ends_the_process():
    out = _python("""
    with preemption.stop_signals(grace_s=30) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        wait_for(lambda: stop.requested, "the request")
        stop.set_grace(0.5)  # timed from the signal
        time.sleep(30)  # a step or a save that does not finish
    print("NOT REACHED")
    """)
    assert out.returncode == 128 + 15, (out.returncode, out.stdout, out.stderr)
    assert "did not finish within config.checkpoint.preemption_grace_s=0.5 s" in out.stderr
