"""Model output is untrusted: fuzz ``Verifier("math")`` (extraction in-process, math-verify in the
worker pool) with adversarial strings. Every call returns a `Reward` within its time limit plus
slack, never raises, and never executes anything: strings that would create a file if anything
evaluated them are planted throughout, and no file may appear. A worker that dies mid-item is
replaced and the next item is scored.

Bounded for ``make test``: a fixed number of examples, no shrinking, and a wall-clock budget
after which the remaining examples are generated but not scored. The hand-written cases
(pathological sizes, fixed code strings) are in ``test_adversarial.py``; this file explores
their combinations.
"""

import itertools
import os
import signal
import threading
import time

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.rewards.adversarial import code_strings
from upt_jax.rewards import Reward, Verifier

LIMIT = 1.0  # per-item time limit of the pool
SLACK = 2.5  # kill + respawn + IPC on a loaded 2-core machine
BUDGET_S = 30.0  # total scoring time of the fuzz test
EXAMPLES = 120

_counter = itertools.count()


@pytest.fixture(scope="module")
def verifier():
    with Verifier("math", timeout_s=LIMIT, num_workers=2) as v:
        # the pool is up (integer answers are decided in-process and never start it)
        assert v(["\\boxed{\\frac{1}{2}}"], ["0.5"])[0].reason == "correct"
        yield v


@pytest.fixture
def budget():
    """Set up once per test (not per example): when the scoring budget started."""
    return {"start": time.monotonic()}


@pytest.fixture(scope="module")
def marker_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fuzz_markers"))


# ----------------------------------------------------------------------------- strategies
LATEX = [
    "\\frac",
    "\\dfrac",
    "\\sqrt",
    "\\left(",
    "\\right)",
    "\\left\\{",
    "\\right.",
    "\\begin{pmatrix}",
    "\\end{pmatrix}",
    "\\begin{cases}",
    "\\int",
    "\\sum_{n=1}^{\\infty}",
    "\\prod",
    "\\lim_{x\\to 0}",
    "\\text{",
    "\\mathrm{",
    "\\operatorname{",
    "\\infty",
    "\\cdot",
    "\\times",
    "\\!",
    "\\\\",
    "&",
    "\\pi",
    "\\in",
    "\\cup",
    "\\{",
    "\\}",
    "^",
    "_",
    "'",
    "\\%",
    "\\$",
    "\\boxed{",
    "\\fbox{",
    "\\def\\x{\\x}",
    "\\newcommand",
    "\\input{/etc/passwd}",
    "\\mathbb{R}",
    "\\binom",
    "!",
    "=",
]
CODE_FRAGMENTS = [
    "lambda: 0",
    "().__class__.__bases__[0].__subclasses__()",
    "__builtins__",
    "globals()",
    "getattr(x, '__globals__')",
    "Symbol('x')",
    "Function('f')",
    "Integer(10)**Integer(10)**10",
    "__import__",
    "os.system",
    ";",
    "\n",
    "`",
    "${x}",
]


def _nested(depth, inner, left="{", right="}"):
    return left * depth + inner + right * depth


def _tower(base, depth):
    return base + "".join("^{" + base for _ in range(depth)) + "}" * depth


def _payloads(marker_dir, n):
    """Strings that would create ``PWNED_*`` files under ``marker_dir`` if evaluated anywhere."""
    tag = f"h{n}"
    touch = os.path.join(marker_dir, f"PWNED_{tag}_s")
    return code_strings(marker_dir, tag) + [
        f"__import__('os').system('touch {touch}0')",
        f"eval(\"__import__('os').system('touch {touch}1')\")",
        f"exec(\"import os; os.system('touch {touch}2')\")",
        # sympify / parse_expr evaluate Python: what a naive `sympify(answer)` would run
        f"Symbol('x').__class__.__mro__[-1].__subclasses__() or open('{touch}3', 'w')",
        f"x + __import__('pathlib').Path('{touch}4').touch()",
        f"[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'Popen'][0](['touch', '{touch}5'])",
        f"__builtins__['__import__']('os').system('touch {touch}6')",
        f"compile(\"open('{touch}7','w')\", 's', 'exec')",
    ]


fragment = st.one_of(
    st.sampled_from(LATEX),
    st.sampled_from(CODE_FRAGMENTS),
    st.text(max_size=40),  # any unicode
    st.text(st.characters(codec="utf-8"), max_size=20),
    st.text(alphabet="{}[]()\\^_$0123456789", max_size=60),  # bracket soup
    st.integers(-(10**30), 10**30).map(str),
    st.builds(lambda d, s: _nested(d, s), st.integers(1, 3000), st.sampled_from(["1", "x", "", "\\frac{1}{2}"])),
    st.builds(lambda d: _nested(d, "2", "\\sqrt{", "}"), st.integers(1, 400)),
    st.builds(lambda d: _nested(d, "2", "\\frac{1}{", "}"), st.integers(1, 400)),
    st.builds(_tower, st.sampled_from(["9", "10", "2", "x", "99999"]), st.integers(1, 6)),  # huge exponents
    st.builds(lambda a, b: f"{a}e{b}", st.integers(-9, 9), st.integers(-(10**12), 10**12)),
    st.builds(lambda n: f"{n}!" * 3, st.integers(10, 10**9)),
    st.builds(lambda b, e: f"({b})^{{{e}}}", st.sampled_from(["x+1", "2", "x-y"]), st.integers(1000, 10**7)),
)


@st.composite
def adversarial(draw, marker_dir):
    parts = draw(st.lists(fragment, max_size=6))
    if draw(st.booleans()):  # a planted payload somewhere in the output
        payloads = _payloads(marker_dir, next(_counter))
        parts.insert(draw(st.integers(0, len(parts))), draw(st.sampled_from(payloads)))
    text = "".join(parts)
    wrap = draw(st.sampled_from(["", "box", "box_end", "answer_is", "dollars", "two_boxes"]))
    if wrap == "box":
        text = "\\boxed{" + text + "}"
    elif wrap == "box_end":
        text = "Reasoning... so the answer is \\boxed{" + text + "}"
    elif wrap == "answer_is":
        text = "The final answer is " + text
    elif wrap == "dollars":
        text = "$" + text + "$"
    elif wrap == "two_boxes":
        text = "\\boxed{1} then \\boxed{" + text + "}"
    return text


GOLDS = ["3", "\\frac{x}{2}", "0.5", "x+1", "\\sqrt{2}", "(1, 2]", "\\{1, 2\\}", "A"]


def _timed(verifier, outputs, golds):
    start = time.monotonic()
    rewards = verifier(outputs, golds)
    elapsed = time.monotonic() - start
    assert len(rewards) == len(outputs)
    for r in rewards:
        assert isinstance(r, Reward) and 0.0 <= r.score <= 1.0 and isinstance(r.reason, str)
    return rewards, elapsed


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_fuzzed_outputs_and_references_return_in_time_and_run_nothing(verifier, marker_dir, budget, data):
    output = data.draw(adversarial(marker_dir), label="output")
    gold = data.draw(st.one_of(st.sampled_from(GOLDS), adversarial(marker_dir)), label="gold")
    if time.monotonic() - budget["start"] > BUDGET_S:
        return  # out of budget: the remaining examples are only generated
    # as a model output against a normal reference, and as a reference (datasets are untrusted too)
    (r1, r2), elapsed = _timed(verifier, [output, "\\boxed{3}"], [gold, output])
    # two items, two workers: each runs in parallel under its own limit
    assert elapsed < LIMIT + SLACK, (elapsed, r1, r2)
    pwned = [f for f in os.listdir(marker_dir) if f.startswith("PWNED")]
    assert not pwned, f"something executed a planted string: {pwned}"


def test_fuzz_left_no_trace_and_the_verifier_still_works(verifier, marker_dir):
    """After the fuzzing (same module, same pool): nothing ran, and a normal item scores."""
    time.sleep(0.2)
    assert not [f for f in os.listdir(marker_dir) if f.startswith("PWNED")]
    (r,) = verifier(["\\boxed{\\frac{2}{4}}"], ["0.5"])
    assert r.reason == "correct"


def test_worker_killed_mid_item_is_replaced_and_the_next_item_is_scored():
    """SIGKILL the verifier workers while they work on an item that would hang: the item gets
    ``worker_died`` at once (not after the time limit), and the replaced pool scores the next."""
    limit = 20.0
    with Verifier("math", timeout_s=limit, num_workers=2) as v:
        assert v(["\\boxed{\\frac{1}{2}}"], ["0.5"])[0].reason == "correct"  # the pool is up
        before = list(v.pool.pids)
        out = {}

        def score():
            start = time.monotonic()
            out["rewards"] = v(["\\boxed{9^{9^{9^{9}}}}", "\\boxed{10^{10^{10^{10}}}}"], ["2", "2"])
            out["elapsed"] = time.monotonic() - start

        worker = threading.Thread(target=score)
        worker.start()
        time.sleep(0.5)  # both items are in math-verify by now
        for pid in before:
            os.kill(pid, signal.SIGKILL)
        worker.join(limit)
        assert not worker.is_alive()
        assert [r.reason for r in out["rewards"]] == ["worker_died", "worker_died"]
        assert out["elapsed"] < limit / 2
        assert not set(before) & set(v.pool.pids) and len(v.pool.pids) == 2
        rewards = v(["\\boxed{\\frac{1}{2}}", "\\boxed{3}", "\\boxed{x+1}"], ["0.5", "4", "1+x"])
        assert [r.reason for r in rewards] == ["correct", "wrong", "correct"]
        assert v.pool.stats["worker_died"] == 2 and v.stats["worker_died"] == 2
