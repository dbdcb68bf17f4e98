"""Markdown tables (mean ± std over seeds, ID/OOD averages), JSON round trip, the PNG plot."""

import json

import numpy as np
import pytest

from upt_jax.eval import report
from upt_jax.eval.evaluate import SuiteResult


def result(name, avg, passes, k=4, n=10):
    return SuiteResult(
        name=name,
        k=k,
        num_questions=n,
        avg_at_k=avg,
        pass_at_k=dict(passes),
        mean_response_length=12.5,
        truncated_frac=0.25,
        reasons={"correct": 3, "wrong": 37},
        correct_counts=[0] * n,
        ids=[f"{name}/{i}" for i in range(n)],
    )


def evaluation(a, b, c):
    return {
        "add_2": result("add_2", a, {1: a, 2: min(1, 2 * a), 4: min(1, 3 * a)}),
        "add_3": result("add_3", b, {1: b, 2: b, 4: b}),
        "add_8": result("add_8", c, {1: c, 2: c, 4: c}),
    }


def test_results_table_single_seed_and_groups():
    runs = {"SFT": evaluation(0.5, 0.25, 0.125), "HPT": evaluation(0.75, 0.5, 0.0)}
    table = report.results_table(runs, id_suites=["add_2", "add_3", "mul_2x2"], ood_suites=["add_8"])
    assert table.splitlines() == [
        "| method | add_2 | add_3 | add_8 | ID avg | OOD avg |",
        "|---|---:|---:|---:|---:|---:|",
        "| SFT | 50.0 | 25.0 | 12.5 | 37.5 | 12.5 |",
        "| HPT | 75.0 | 50.0 | 0.0 | 62.5 | 0.0 |",
    ]
    p4 = report.results_table(runs, metric="pass@4", suites=["add_2"], percent=False, digits=2)
    assert p4.splitlines()[2:] == ["| SFT | 1.00 |", "| HPT | 1.00 |"]
    assert report.results_table(runs, metric="pass@k", suites=["add_3"]).splitlines()[3] == "| HPT | 50.0 |"
    with pytest.raises(KeyError):
        report.results_table(runs, metric="pass@3")


def test_results_table_mean_std_over_seeds_and_missing_cells():
    runs = {
        "GRPO": [evaluation(0.5, 0.2, 0.1), evaluation(0.7, 0.4, 0.3)],
        "base": {"add_2": 0.1},
    }  # plain floats are accepted as well
    lines = report.results_table(runs, id_suites=["add_2", "add_3"], ood_suites=["add_8"]).splitlines()
    s = lambda a, b: f"{np.std([a, b], ddof=1) * 100:.1f}"  # noqa: E731
    assert lines[2] == (
        f"| GRPO | 60.0 ± {s(0.5, 0.7)} | 30.0 ± {s(0.2, 0.4)} | 20.0 ± {s(0.1, 0.3)} | "
        f"45.0 ± {s(0.35, 0.55)} | 20.0 ± {s(0.1, 0.3)} |"
    )
    assert lines[3] == "| base | 10.0 | – | – | – | – |"


def test_suite_table():
    text = report.suite_table(evaluation(0.5, 0.25, 0.125))
    lines = text.splitlines()
    assert lines[0] == ("| suite | questions | avg@4 | pass@1 | pass@2 | pass@4 | mean length | truncated | reasons |")
    assert lines[2] == "| add_2 | 10 | 50.0 | 50.0 | 100.0 | 100.0 | 12.5 | 25.0 | correct 3, wrong 37 |"
    two = report.suite_table([evaluation(0.5, 0.25, 0.125), evaluation(0.7, 0.25, 0.125)])
    assert two.splitlines()[2].startswith(f"| add_2 | 10 | 60.0 ± {np.std([0.5, 0.7], ddof=1) * 100:.1f} |")


def test_json_round_trip(tmp_path):
    ev = evaluation(0.5, float("nan"), 0.125)
    path = report.write_json(tmp_path / "sub" / "r.json", {"results": ev, "x": np.float32(1.5), "arr": np.arange(3)})
    text = open(path).read()
    assert "NaN" not in text  # strict JSON
    data = json.loads(text)
    assert data["x"] == 1.5 and data["arr"] == [0, 1, 2]
    assert data["results"]["add_3"]["avg_at_k"] is None
    back = SuiteResult.from_dict(data["results"]["add_2"])
    assert back == ev["add_2"]
    # tables accept the JSON form too
    assert report.results_table({"m": data["results"]}, suites=["add_2"]).splitlines()[2] == "| m | 50.0 |"


def test_plot_pass_at_k(tmp_path):
    runs = {"SFT": [evaluation(0.5, 0.2, 0.1), evaluation(0.7, 0.4, 0.3)], "HPT": evaluation(0.6, 0.3, 0.0)}
    path = report.plot_pass_at_k(runs, tmp_path / "passk.png", title="t")
    with open(path, "rb") as f:
        head = f.read(8)
    assert head == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    img = imread(path)
    assert img.shape[0] > 100 and img.shape[1] > 300  # 3 panels side by side
    with pytest.raises(ValueError):
        report.plot_pass_at_k({}, tmp_path / "empty.png")
