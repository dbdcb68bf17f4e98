"""The worker pool: hard time limit, killed and dead workers replaced, parallel batches."""

import os
import time

import pytest
import sympy

from upt_jax.rewards import Reward, VerifierPool, math_equivalent

# generous enough that sympy's first parses finish on a loaded 2-core CI machine, short enough
# that the hung-item test stays quick
LIMIT = 3.0


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(num_workers=2, timeout_s=LIMIT) as p:
        p.map(math_equivalent, [("1", "1")])  # wait until the workers are up
        yield p


def test_results_in_order(pool):
    out = pool.map(math_equivalent, [("1/2", "0.5"), ("2", "3"), ("\\sqrt{8}", "2\\sqrt{2}")])
    assert [r.reason for r in out] == ["correct", "wrong", "correct"]
    assert pool.map(math_equivalent, []) == []


def test_hung_item_is_killed_replaced_and_scored_timeout(pool):
    before = set(pool.pids)
    start = time.monotonic()
    out = pool.map(time.sleep, [(60,), (0.01,)])
    elapsed = time.monotonic() - start
    assert out[0] == Reward(0.0, "timeout") and out[1] is None  # time.sleep returns None
    assert LIMIT <= elapsed < LIMIT + 2.0
    assert len(set(pool.pids) - before) == 1  # one worker replaced
    assert pool.map(math_equivalent, [("3", "3")])[0].reason == "correct"


def test_dead_worker_is_replaced(pool):
    before = set(pool.pids)
    out = pool.map(os._exit, [(3,)])  # the worker dies
    assert out == [Reward(0.0, "worker_died")]
    assert len(set(pool.pids) - before) == 1
    assert pool.map(math_equivalent, [("3", "3")])[0].reason == "correct"


def test_worker_killed_from_outside_is_replaced(pool):
    victim = pool.processes[0]
    victim.kill()
    victim.join()
    out = pool.map(math_equivalent, [("1", "1"), ("2", "2"), ("3", "4")])
    assert [r.reason for r in out] == ["correct", "correct", "wrong"]
    assert victim.pid not in pool.pids


def test_exception_is_an_error_reward(pool):
    out = pool.map(int, [("not a number",), ("12",)])
    assert out == [Reward(0.0, "error", detail="ValueError"), 12]


def test_memory_limit_fails_the_item_not_the_host(pool):
    out = pool.map(bytearray, [(8 << 30,)])  # 8 GiB > 4 GiB limit
    assert out[0].score == 0.0 and out[0].reason in ("error", "worker_died")
    assert pool.map(math_equivalent, [("3", "3")])[0].reason == "correct"


def test_items_run_in_parallel(pool):
    start = time.monotonic()
    pool.map(time.sleep, [(0.4,)] * 4)
    assert time.monotonic() - start < 1.5  # 2 workers: ~0.8 s; one at a time would be 1.6 s


def test_sympify_of_code_is_refused_in_workers(pool, tmp_path):
    marker = tmp_path / "PWNED_sympify"
    code = f"__import__('os').system('touch {marker}')"
    out = pool.map(sympy.sympify, [(code,), ("12",), ("x",)])
    assert out[0] == Reward(0.0, "error", detail="EvalRefused")
    assert out[1:] == [12, sympy.Symbol("x")]  # what math-verify needs still works
    assert not marker.exists()


def test_fork_is_refused():
    with pytest.raises(ValueError, match="never fork"):
        VerifierPool(1, start_method="fork")


def test_spawn_start_method_and_close():
    p = VerifierPool(num_workers=1, timeout_s=5.0, start_method="spawn")
    assert p.map(math_equivalent, [("\\frac{1}{2}", "0.5")])[0].reason == "correct"
    procs = p.processes
    p.close()
    assert all(not proc.is_alive() for proc in procs)
    with pytest.raises(RuntimeError, match="closed"):
        p.map(math_equivalent, [("1", "1")])


SCRIPT = """
print("TOP-LEVEL RAN", flush=True)
from upt_jax.rewards import Verifier
with Verifier("math", timeout_s=5.0, num_workers=2) as v:
    print([r.reason for r in v(["\\\\boxed{\\\\frac12}", "\\\\boxed{2}"], ["0.5", "3"])])
"""


@pytest.mark.parametrize("how", ["file", "stdin"])
def test_workers_do_not_rerun_an_unguarded_main_script(tmp_path, how):
    """A training script without `if __name__ == "__main__":` must not run again in
    every worker (the usual spawn/forkserver trap), nor fail when read from stdin."""
    import subprocess
    import sys

    script = tmp_path / "train_without_guard.py"
    script.write_text(SCRIPT)
    if how == "file":
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    else:
        proc = subprocess.run(
            [sys.executable, "-"], input=SCRIPT, capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("TOP-LEVEL RAN") == 1
    assert "['correct', 'wrong']" in proc.stdout


def spin_forever():
    """A hung item that keeps a CPU busy in Python code (a parser in a loop)."""
    while True:
        pass


ORPHAN = """
import os, sys, time
from upt_jax.rewards import VerifierPool
from tests.rewards.test_pool import spin_forever
if __name__ == "__main__":
    pool = VerifierPool(num_workers=2, timeout_s=60.0, preload=())
    pool.map(abs, [(1,), (2,)])                                # both workers are up
    print("READY", flush=True)
    # one item spins in Python, one in C holding the GIL (no Python thread can run in that worker)
    pool.map(spin_forever, [()], timeout_s=60.0) if sys.argv[1] == "python" else \\
        pool.map(sum, [(range(10**15),)], timeout_s=1.0)
"""


def _descendants(root: int) -> set[int]:
    """Every live process below ``root`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        for c in children.get(todo.pop(), []):
            found.add(c)
            todo.append(c)
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
@pytest.mark.parametrize("hang", ["python", "c"])
def test_workers_forkserver_and_tracker_die_when_the_owner_is_killed(tmp_path, hang):
    """SIGKILL the process that owns a pool while a worker is stuck on a hung item: the worker,
    the forkserver and the resource tracker are all gone within seconds (the lifeline watchdog
    for a hang in Python code; the CPU-time backstop, 2 × the item's 1 s limit + 1 s, for a hang
    in C code that holds the GIL)."""
    import signal
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    (tmp_path / "orphan.py").write_text(ORPHAN)
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "orphan.py"), hang],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started: set[int] = set()
    try:
        assert proc.stdout.readline().strip() == "READY"
        time.sleep(0.5)  # the item is running
        started = _descendants(proc.pid)
        assert len(started) >= 4, started  # forkserver, tracker, 2 workers
        busy = [p for p in started if _cpu_ticks(p) > 0]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and any(_alive(p) for p in started):
            time.sleep(0.1)
        left = sorted(p for p in started if _alive(p))
        assert not left, f"still running after the owner died: {[_cmdline(p) for p in left]} (busy: {busy})"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in started:  # never leave a stray process behind, whatever failed
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return "?"
