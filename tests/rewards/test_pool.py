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
        p.map(math_equivalent, [("1", "1")])   # wait until the workers are up
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
    assert out[0] == Reward(0.0, "timeout") and out[1] is None   # time.sleep returns None
    assert LIMIT <= elapsed < LIMIT + 2.0
    assert len(set(pool.pids) - before) == 1                      # one worker replaced
    assert pool.map(math_equivalent, [("3", "3")])[0].reason == "correct"


def test_dead_worker_is_replaced(pool):
    before = set(pool.pids)
    out = pool.map(os._exit, [(3,)])                                 # the worker dies
    assert out == [Reward(0.0, "worker_died")]
    assert len(set(pool.pids) - before) == 1
    assert pool.map(math_equivalent, [("3", "3")])[0].reason == "correct"


def test_worker_killed_from_outside_is_replaced(pool):
    victim = pool._workers[0].process
    victim.kill()
    victim.join()
    out = pool.map(math_equivalent, [("1", "1"), ("2", "2"), ("3", "4")])
    assert [r.reason for r in out] == ["correct", "correct", "wrong"]
    assert victim.pid not in pool.pids


def test_exception_is_an_error_reward(pool):
    out = pool.map(int, [("not a number",), ("12",)])
    assert out == [Reward(0.0, "error", detail="ValueError"), 12]


def test_memory_limit_fails_the_item_not_the_host(pool):
    out = pool.map(bytearray, [(8 << 30,)])                          # 8 GiB > 4 GiB limit
    assert out[0].score == 0.0 and out[0].reason in ("error", "worker_died")
    assert pool.map(math_equivalent, [("3", "3")])[0].reason == "correct"


def test_items_run_in_parallel(pool):
    start = time.monotonic()
    pool.map(time.sleep, [(0.4,)] * 4)
    assert time.monotonic() - start < 1.5        # 2 workers: ~0.8 s; one at a time would be 1.6 s


def test_sympify_of_code_is_refused_in_workers(pool, tmp_path):
    marker = tmp_path / "PWNED_sympify"
    code = f"__import__('os').system('touch {marker}')"
    out = pool.map(sympy.sympify, [(code,), ("12",), ("x",)])
    assert out[0] == Reward(0.0, "error", detail="EvalRefused")
    assert out[1:] == [12, sympy.Symbol("x")]   # what math-verify needs still works
    assert not marker.exists()


def test_fork_is_refused():
    with pytest.raises(ValueError, match="never fork"):
        VerifierPool(1, start_method="fork")


def test_spawn_start_method_and_close():
    p = VerifierPool(num_workers=1, timeout_s=5.0, start_method="spawn")
    assert p.map(math_equivalent, [("\\frac{1}{2}", "0.5")])[0].reason == "correct"
    procs = [w.process for w in p._workers]
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
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)
    else:
        proc = subprocess.run([sys.executable, "-"], input=SCRIPT, capture_output=True,
                              text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("TOP-LEVEL RAN") == 1
    assert "['correct', 'wrong']" in proc.stdout
