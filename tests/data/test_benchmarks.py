"""The seven bundled benchmarks load by name with the right counts, and ship in the wheel."""

import glob
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from upt_jax.data import benchmark_sets

EXPECTED = {
    "aime24": 30,
    "aime25": 30,
    "amc23": 40,
    "math500": 500,
    "minerva": 272,
    "olympiadbench": 674,
    "gpqa_diamond": 198,
}


@pytest.mark.parametrize("name, count", sorted(EXPECTED.items()))
def test_benchmark_loads_with_expected_count(name, count):
    items = benchmark_sets.load_benchmark(name)
    assert len(items) == count
    assert len({x["id"] for x in items}) == count
    for x in items:
        assert x["benchmark"] == name
        assert isinstance(x["question"], str) and x["question"].strip()
        assert isinstance(x["answer"], str) and x["answer"].strip()
        a = x["answer"]
        assert not a.startswith("\\boxed{")
        assert not (a.startswith("$") and a.endswith("$") and a.count("$") == 2)


def test_names_and_aliases():
    assert benchmark_sets.benchmark_names() == tuple(EXPECTED)
    for alias, name in [
        ("MATH-500", "math500"),
        ("AIME24", "aime24"),
        ("gpqa", "gpqa_diamond"),
        ("GPQA-Diamond", "gpqa_diamond"),
        ("OlympiadBench", "olympiadbench"),
    ]:
        assert benchmark_sets.load_benchmark(alias)[0]["benchmark"] == name
    with pytest.raises(KeyError, match="unknown benchmark 'gsm8k'"):
        benchmark_sets.load_benchmark("gsm8k")


def test_answers_and_verifier_kinds():
    aime = benchmark_sets.load_benchmark("aime24")
    assert aime[0]["answer"] == "204" and aime[0]["verifier"] == "math"  # was \boxed{204}
    gpqa = benchmark_sets.load_benchmark("gpqa_diamond")
    assert {x["answer"] for x in gpqa} == {"A", "B", "C", "D"}
    assert all(x["verifier"] == "choice" for x in gpqa)
    assert gpqa[0]["id"] == "gpqa_diamond/0"
    math500 = benchmark_sets.load_benchmark("math500")
    assert math500[0]["answer"] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert math500[0]["id"] == "math500/test/precalculus/807.json"
    olympiad = benchmark_sets.load_benchmark("olympiadbench")
    assert olympiad[1]["answer"] == "\\frac{1}{2 n+2}"  # was $...$
    assert "$69$,$84$" in {x["answer"] for x in olympiad}  # several answers


def test_strip_wrappers():
    s = benchmark_sets.strip_wrappers
    assert s("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert s("$\\boxed{3}$") == "3"
    assert s("\\boxed{1}, \\boxed{2}") == "\\boxed{1}, \\boxed{2}"  # not one wrapper
    assert s("$1$ and $2$") == "$1$ and $2$"


def test_licence_ships_beside_the_data():
    import importlib.resources

    root = importlib.resources.files("upt_jax") / "data" / "benchmarks"
    assert "MIT License" in (root / "LICENSE-Unify-Post-Training").read_text()


def test_wheel_contains_benchmark_files(tmp_path):
    """Build the wheel from a copy of the package and look inside."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    src = tmp_path / "src"
    shutil.copytree(os.path.join(repo, "upt_jax"), src / "upt_jax", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(repo, "setup.py"), src / "setup.py")
    try:
        import setuptools  # noqa: F401 -- build offline with the installed setuptools

        offline = ["--no-index", "--no-build-isolation"]
    except ImportError:  # newer venvs lack setuptools: let pip fetch the build backend
        offline = []
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *offline, str(src), "-w", str(tmp_path / "out")],
        check=True,
        capture_output=True,
        cwd=src,
    )
    (wheel,) = glob.glob(str(tmp_path / "out" / "*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for info in benchmark_sets.BENCHMARKS.values():
        assert f"upt_jax/data/benchmarks/{info.filename}" in names
    assert "upt_jax/data/benchmarks/LICENSE-Unify-Post-Training" in names
