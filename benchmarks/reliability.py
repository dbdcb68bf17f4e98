"""Reliability figures in one command: the attacks of README's "What upt_jax guarantees", counted.

    PYTHONPATH=$PWD python -m benchmarks.reliability [--fuzz N] [--kills K]

Sections (each returns ``(attempted, handled)`` and a note; a markdown table is printed at the end):

1. bad configs rejected before compute: every schema key's out-of-domain example values
   (``Key.domain.outside``) and issue #20's named cases go through ``schema.validate``, which reads
   no file and builds nothing; handled = ``ConfigError`` naming the key (or the ConfigDict's own
   type check refusing the value).
2. corrupted checkpoints handled: two steps of a tiny TrainState are saved, the latest is damaged
   (each damage function of ``tests/train/test_checkpoint.py``, plus NaN-valued arrays); handled =
   restore returns the previous step bitwise.
3. bad rows reported: one JSONL file per kind of bad row; handled = ``DataError`` naming
   ``file:line`` (``file`` for an empty file), and with ``skip_bad_rows`` the row is skipped and
   counted (an empty file stays an error).
4. verifier inputs: N fuzzed adversarial completions (the generators of
   ``tests/rewards/test_fuzz.py``) plus the fixed code strings, each scored as a model output and as
   a reference by ``Verifier("math")``; handled = a ``Reward`` returned within the limit plus
   slack; and no planted payload created a file (code executed: 0).
5. kills survived (``--kills K``; slow): a ``upt train`` subprocess SIGKILLed K times at random
   moments, resumed each time with the same command; handled = its final parameters and per-step
   losses equal an uninterrupted run's, bitwise (the helpers of ``tests/train/test_crash.py``).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def host() -> str:
    """``<device kind> (<n> device(s)); host <CPU model>, <cores> cores, ISA <flags>``."""
    from upt_jax.hostinfo import host as _host

    return _host()


# ----------------------------------------------------------------------------- 1. configs
ISSUE20_CASES = [
    ("train.max_grad_norm", -1.0),
    ("train.learning_rate", math.nan),
    ("train.learning_rate", -1e-4),
    ("train.update_epochs", 0),
    ("rollout.max_new_tokens", 0),
    ("rollout.temperature", -1.0),
    ("rollout.top_p", 0.0),
]


def _set(c, path, value):
    *parents, last = path.split(".")
    node = c
    for p in parents:
        node = node[p]
    node[last] = value


def bad_configs():
    import importlib

    from experiments import grpo, reward_model
    from upt_jax.train import schema

    cases = [(p, v) for p, k in schema.keys().items() for v in k.domain.outside] + ISSUE20_CASES
    attempted = handled = type_refused = 0
    failures = []
    for path, value in cases:
        if path.startswith("star."):
            c = importlib.import_module("experiments.star").get_config()
        elif schema.keys().get(path) is not None and schema.keys()[path].section:
            c = reward_model.get_config()
        else:
            c = grpo.get_config()
        attempted += 1
        try:
            _set(c, path, value)
        except (TypeError, ValueError):  # the ConfigDict's own type check refuses it: also before compute
            handled += 1
            type_refused += 1
            continue
        try:
            schema.validate(c)
        except schema.ConfigError as e:
            if f"config.{path}" in str(e):
                handled += 1
                continue
            failures.append(f"{path}={value!r}: {e}")
        else:
            failures.append(f"{path}={value!r}: accepted")
    walked = len(cases) - len(ISSUE20_CASES)
    note = (
        f"{walked} out-of-domain values of {len(schema.keys())} schema keys + "
        f"{len(ISSUE20_CASES)} issue #20 cases; "
        f"{type_refused} refused by ConfigDict's type check, the rest by schema.validate"
    )
    return attempted, handled, note, failures


# ----------------------------------------------------------------------------- 2. checkpoints
def corrupted_checkpoints():
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from tests.train import test_checkpoint as tc
    from upt_jax.models import init_model
    from upt_jax.train import create_train_state, make_optimizer
    from upt_jax.train.checkpoint import Checkpointer, abstract_with_shardings

    tx = make_optimizer(1e-2, max_grad_norm=1.0)
    _, state, _ = create_train_state(init_model(tc.CFG, 0), tx, seed=0)
    rs, states = np.random.default_rng(0), []
    for _ in range(2):
        grads = jax.tree.map(lambda x: rs.standard_normal(x.shape).astype(x.dtype), state.params)
        updates, opt = tx.update(grads, state.opt_state, state.params)
        state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt)
        states.append(state)
    nan_state = states[1].replace(params=jax.tree.map(lambda x: x * jnp.nan, states[1].params))

    def _nan(step_dir):  # marker: the NaN state is saved instead of a damaged file
        return "not finite"

    damages = [
        tc._truncate,
        tc._bitflip,
        tc._missing_file,
        tc._no_commit_marker,
        tc._bad_manifest,
        tc._truncate_and_rehash,
        _nan,
    ]
    attempted = handled = 0
    failures = []
    for damage in damages:
        attempted += 1
        with tempfile.TemporaryDirectory(prefix="reliab_ckpt_") as d:
            d = Path(d)
            second = nan_state if damage is _nan else states[1]
            with Checkpointer(d, save_every=1) as ck:
                ck.save(1, states[0], {"step": 1})
                ck.save(2, second, {"step": 2})
            damage(d / "2")
            try:
                with Checkpointer(d, save_every=1) as ck:
                    restored, extra = ck.restore(abstract_with_shardings(states[0]))
                tc._assert_bitwise_equal(states[0], restored)
                assert extra == {"step": 1}, extra
                handled += 1
            except Exception as e:  # noqa: BLE001 — counted and reported
                failures.append(f"{damage.__name__}: {type(e).__name__}: {e}")
    note = "damage: " + ", ".join(f.__name__.lstrip("_") for f in damages) + "; restored the previous step bitwise"
    return attempted, handled, note, failures


# ----------------------------------------------------------------------------- 3. bad rows
GOOD = '{"id": "ok", "question": "1+1", "answer": "2"}'
BAD_ROWS = {  # name: (line 2 of the file, DataConfig keywords)
    "malformed JSON": ('{"id": "b", "question": "q", "answer": "4"', {}),
    "missing field": ('{"id": "b", "answer": "4"}', {}),
    "wrong type": ('{"id": "b", "question": ["q"], "answer": "4"}', {}),
    "not an object": ("[1, 2]", {}),
    "duplicate id": ('{"id": "ok", "question": "again", "answer": "2"}', {}),
    "non-finite answer (NaN)": ('{"id": "b", "question": "q", "answer": NaN}', {}),
    "non-finite answer (1e999)": ('{"id": "b", "question": "q", "answer": 1e999}', {}),
    "non-integer answer, integer verifier": ('{"id": "b", "question": "q", "answer": "5.5"}', {"verifier": "integer"}),
    "nested too deeply": ('{"question": ' + "[" * 100_000 + "]" * 100_000 + "}", {}),
    "lone surrogate": ('{"question": "2+2 \\ud800", "answer": "4"}', {}),
    "row over max_row_chars": ('{"id": "b", "question": "' + "a" * 1_000_001 + '", "answer": "1"}', {}),
}


def bad_rows():
    from upt_jax.data import readers
    from upt_jax.data.readers import DataConfig, DataError

    attempted = handled = 0
    failures = []
    with tempfile.TemporaryDirectory(prefix="reliab_rows_") as d:
        for i, (name, (row, kw)) in enumerate(BAD_ROWS.items()):
            attempted += 1
            path = os.path.join(d, f"bad{i}.jsonl")
            with open(path, "w") as f:
                f.write(GOOD + "\n" + row + "\n")
            try:
                readers.load_records(DataConfig(path=path, **kw))
                failures.append(f"{name}: accepted")
                continue
            except DataError as e:
                if not str(e).startswith(f"{path}:2: "):
                    failures.append(f"{name}: does not name {path}:2: {str(e)[:200]}")
                    continue
            records, stats = readers.load_records(DataConfig(path=path, skip_bad_rows=True, **kw))
            if [r["id"] for r in records] == ["ok"] and stats.rows_skipped == 1:
                handled += 1
            else:
                failures.append(f"{name}: skip_bad_rows kept {len(records)} rows, skipped {stats.rows_skipped}")
        attempted += 1  # an empty file: an error naming it, even with skip_bad_rows
        path = os.path.join(d, "empty.jsonl")
        open(path, "w").close()
        try:
            readers.load_records(DataConfig(path=path, skip_bad_rows=True))
            failures.append("empty file: accepted")
        except DataError as e:
            if str(e).startswith(f"{path}: no rows"):
                handled += 1
            else:
                failures.append(f"empty file: {e}")
    note = (
        f"{len(BAD_ROWS)} kinds of bad row + an empty file; DataError names file:line, skip_bad_rows skips and counts"
    )
    return attempted, handled, note, failures


# ----------------------------------------------------------------------------- 4. verifier
def fuzzed_inputs(n: int, marker_dir: str) -> list[tuple[str, str]]:
    """``n`` (output, reference) pairs from ``tests/rewards/test_fuzz.py``'s strategies
    (deterministic), plus the fixed code strings against a normal reference."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    from tests.rewards import test_fuzz as tf
    from tests.rewards.adversarial import code_strings

    pairs: list[tuple[str, str]] = []

    @settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def collect(data):
        output = data.draw(tf.adversarial(marker_dir))
        gold = data.draw(st.one_of(st.sampled_from(tf.GOLDS), tf.adversarial(marker_dir)))
        pairs.append((output, gold))

    collect()
    pairs = pairs[:n]
    pairs += [(s, "3") for s in code_strings(marker_dir, "fixed")]
    return pairs


def verifier_inputs(n: int, limit: float = 1.0, slack: float = 2.5):
    from tests.rewards.test_fuzz import SLACK
    from upt_jax.rewards import Reward, Verifier

    slack = max(slack, SLACK)
    failures = []
    over = errors = timeouts = 0
    with tempfile.TemporaryDirectory(prefix="reliab_fuzz_") as marker_dir:
        pairs = fuzzed_inputs(n, marker_dir)
        with Verifier("math", timeout_s=limit, num_workers=2) as v:
            v(["\\boxed{\\frac{1}{2}}"], ["0.5"])  # the pool is up
            for output, gold in pairs:
                # as a model output against its reference, and as a reference (datasets are untrusted)
                start = time.monotonic()
                try:
                    rewards = v([output, "\\boxed{3}"], [gold, output])
                except Exception as e:  # noqa: BLE001 — counted and reported
                    errors += 2
                    failures.append(f"raised {type(e).__name__}: {e} on {output[:80]!r}")
                    continue
                elapsed = time.monotonic() - start
                if elapsed > limit + slack:
                    over += 2
                    failures.append(f"{elapsed:.1f} s on {output[:80]!r}")
                bad = [r for r in rewards if not (isinstance(r, Reward) and 0.0 <= r.score <= 1.0)]
                errors += len(bad)
                timeouts += sum(r.reason == "timeout" for r in rewards if isinstance(r, Reward))
        time.sleep(0.2)
        pwned = [f for f in os.listdir(marker_dir) if f.startswith("PWNED")]
    attempted = 2 * len(pairs)
    handled = attempted - over - errors
    planted = sum("PWNED" in o or "PWNED" in g for o, g in pairs)
    return dict(
        attempted=attempted,
        handled=handled,
        over_limit=over,
        timeouts=timeouts,
        executed=len(pwned),
        planted=planted,
        failures=failures + [f"executed: {pwned}"] * bool(pwned),
        note=f"{len(pairs) - 11} fuzzed + 11 fixed code strings, each as output and as reference; "
        f"limit {limit:g} s (+{slack:g} s slack); {timeouts} killed at the limit (score 0); "
        f"{planted} carry a planted payload",
    )


# ----------------------------------------------------------------------------- 5. kills
def kills_survived(k: int, seed: int = 1234):
    from tests.train import test_crash as tcr

    rng = random.Random(seed)
    steps = tcr.STEPS
    failures = []
    with tempfile.TemporaryDirectory(prefix="reliab_kill_") as d:
        d = Path(d)
        ref = tcr.Child(d / "ref", steps, d / "ref.log", 1)
        run = d / "crash"
        done = 0
        for attempt in range(k):
            child = tcr.Child(run, steps, d / f"crash{attempt}.log", 1)
            start = tcr._metric_lines(run)
            if start >= steps - 1:
                child.wait()
                break
            tcr._wait_for(child, lambda: tcr._metric_lines(run) > start, "a new step")
            time.sleep(rng.uniform(0.0, 0.6))  # a random moment: mid-step or mid-save
            child.kill()
            done += 1
        tcr.Child(run, steps, d / "final.log", 1).finish()
        ref.finish()
        try:
            tcr._assert_same_run(run, d / "ref", steps)
            handled = done
        except AssertionError as e:
            handled = 0
            failures.append(f"resumed run differs: {str(e)[:300]}")
    return (
        done,
        handled,
        f"SIGKILL at a random moment, resumed with the same command; {steps} steps, "
        f"final params and losses vs an uninterrupted run, bitwise",
        failures,
    )


# ----------------------------------------------------------------------------- main
def run(fuzz: int = 500, kills: int = 0) -> list[dict]:
    rows = []

    def add(name, attempted, handled, note, failures, seconds):
        rows.append(
            dict(
                name=name, attempted=attempted, handled=handled, note=note, failures=failures, seconds=round(seconds, 1)
            )
        )

    t = time.monotonic()
    add("bad configs rejected before compute", *bad_configs(), time.monotonic() - t)
    t = time.monotonic()
    add("corrupted checkpoints handled", *corrupted_checkpoints(), time.monotonic() - t)
    t = time.monotonic()
    add("bad rows reported", *bad_rows(), time.monotonic() - t)
    t = time.monotonic()
    v = verifier_inputs(fuzz)
    s = time.monotonic() - t
    add("verifier inputs within the time limit", v["attempted"], v["handled"], v["note"], v["failures"], s)
    add(
        "code executed by verifier inputs (handled = nothing ran)",
        v["attempted"],
        v["attempted"] - v["executed"],
        f"{v['executed']} files created by planted payloads",
        [],
        s,
    )
    if kills:
        t = time.monotonic()
        add("kills survived", *kills_survived(kills), time.monotonic() - t)
    return rows


def table(rows) -> str:
    out = ["| attack | attempted | handled | s | how |", "|---|---:|---:|---:|---|"]
    out += [f"| {r['name']} | {r['attempted']} | {r['handled']} | {r['seconds']} | {r['note']} |" for r in rows]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fuzz", type=int, default=500, help="fuzzed verifier inputs (default 500)")
    ap.add_argument("--kills", type=int, default=0, help="SIGKILLs of a training subprocess (slow; default 0)")
    args = ap.parse_args(argv)
    rows = run(args.fuzz, args.kills)
    print(f"upt_jax reliability: {host()}")
    print(f"command: python -m benchmarks.reliability {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print()
    print(table(rows))
    bad = [r for r in rows if r["handled"] != r["attempted"]]
    for r in rows:
        for f in r["failures"][:10]:
            print(f"  {r['name']}: {f}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
