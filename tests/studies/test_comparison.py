"""The method comparison (`upt_jax.studies.comparison`, `experiments/paper_table.py`)."""

import json
import os
import sys

import pytest

from experiments import paper_table
from upt_jax.studies import comparison as cmp
from upt_jax.eval.report import results_table
from upt_jax.train import checks
from upt_jax.train import trainer as trainer_lib


@pytest.mark.parametrize("variant", ["full", "demo"])
def test_every_arm_gets_the_same_budget_from_the_same_base(variant):
    c = paper_table.get_config(variant)
    b = c.budget
    for key in c.arms:
        for seed in c.seeds:
            kind, ac = cmp.arm_config(c, key, seed)
            stages = [ac[s] for s in ac.order] if kind == "pipeline" else [ac]
            assert sum(s.train.steps for s in stages) == b.steps, key
            for s in stages:
                assert s.seed == seed and s.train.questions_per_step == b.questions_per_step
                assert s.train.learning_rate == b.learning_rate
                assert tuple(s.data.tiers) == tuple(c.eval.id_tiers)
                if s.mode == "online":
                    assert s.rollout.n == b.n and s.rollout.max_new_tokens == b.max_new_tokens
                checks.check_recipe(s)  # γ vs n, group sizes: valid before any compute
            # every arm starts from the base model (a pipeline's first stage; later stages hand off)
            assert stages[0].model.init == "checkpoint" and stages[0].model.checkpoint == c.base.run_dir
            assert ac.run_dir == os.path.join(c.run_dir, key, f"seed{seed}")


def test_arms_are_what_their_labels_say():
    c = paper_table.get_config("full")
    recipe = lambda key: trainer_lib.get_recipe(cmp.arm_config(c, key, 0)[1])  # noqa: E731
    assert recipe("hpt").name == "hpt"
    assert recipe("hpt_released_code").name == "hpt_released_code"
    assert recipe("hpt_offline_rl").name == "hpt_offline_rl"
    assert {t.name for t in recipe("hpt_offline_both").terms} == {"rl", "sft", "rl_demo"}
    assert cmp.arm_config(c, "hpt_gamma_1of8", 0)[1].recipe.hparams.gamma == 0.125
    kind, p = cmp.arm_config(c, "sft_then_grpo", 0)
    assert kind == "pipeline" and [p[s].recipe.name for s in p.order] == ["sft", "grpo"]
    assert [p[s].train.steps for s in p.order] == [c.budget.steps // 2, c.budget.steps - c.budget.steps // 2]
    assert len(c.seeds) >= 3
    gates = {cmp.arm_config(c, k, 0)[1].recipe.hparams.get("gamma", 0.0) for k in c.tables[1][1]}
    assert gates == {0.0, 0.125, 0.25} and c.budget.n == 8


def test_job_order_main_table_first_then_ablations_seed_by_seed():
    c = paper_table.get_config("full")
    jobs = cmp.job_order(c)
    main = [k for k in c.tables[0][1] if k in c.arms]
    n_main = len(main) * len(c.seeds)
    assert jobs[:n_main] == [(a, s) for a in main for s in c.seeds]
    rest = jobs[n_main:]
    assert [s for _, s in rest] == sorted(s for _, s in rest)  # all ablations at seed 0 first
    assert {a for a, _ in rest} == set(paper_table.ABLATIONS)
    assert len(jobs) == len(set(jobs)) == n_main + 2 * len(paper_table.ABLATIONS)


def test_results_table_extra_group_columns():
    runs = {"A": [{"x": 0.5, "y": 0.1, "z": 0.0}, {"x": 0.7, "y": 0.3, "z": 0.2}]}
    table = results_table(runs, suites=["x", "y", "z"], id_suites=["x"], groups=[("rest", ["y", "z"])])
    header, _, row = table.strip().splitlines()
    assert header.endswith("| ID avg | rest |")
    # rest: per seed mean(y, z) = 0.05, 0.25 → 15.0 ± 14.1
    assert row.endswith("| 60.0 ± 14.1 | 15.0 ± 14.1 |")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke comparison, reduced further: a pipeline arm and HPT over 2 seeds."""
    c = paper_table.get_config("smoke")
    c.run_dir = str(tmp_path_factory.mktemp("cmp") / "run")
    c.base.run_dir = os.path.join(c.run_dir, "base")
    for key in ("sft", "hpt_offline_both", "hpt_released_code"):
        del c.arms[key]
    c.tables = (("Main", ("base", "sft_then_grpo", "hpt")),)
    results = trainer_lib.train(c)
    return c, results


@pytest.mark.slow  # the old paper_table smoke comparison (64 s fixture); tests/studies/test_testbed.py runs the comparison path in make test
def test_comparison_runs_evaluates_and_reports(smoke):
    c, _ = smoke
    with open(os.path.join(c.run_dir, "results.json")) as f:
        res = json.load(f)
    assert set(res["arms"]) == {"base", "sft_then_grpo", "hpt"}
    assert set(res["arms"]["hpt"]["seeds"]) == {"0", "1"}
    suites = cmp.eval_suites(c.eval)
    for key, entry in res["arms"].items():
        for seed_res in entry["seeds"].values():
            assert list(seed_res) == suites
            for r in seed_res.values():
                assert r["num_questions"] == c.eval.n_per_tier and r["k"] == c.eval.k
                assert len(r["correct_counts"]) == c.eval.n_per_tier
    # the pipeline arm trained both stages from the base model, the step budget split between them
    dirs = res["arms"]["sft_then_grpo"]["run_dirs"]["0"]
    assert [os.path.basename(d) for d in dirs] == ["sft", "grpo"]
    steps = [r["step"] for r in cmp.read_metrics(dirs)]
    assert steps == list(range(1, c.budget.steps + 1))
    # seeds differ (data order and sampling), the base model is evaluated once
    hpt = [cmp.read_metrics(d) for d in res["arms"]["hpt"]["run_dirs"].values()]
    assert [r["reward/mean"] for r in hpt[0]] != [r["reward/mean"] for r in hpt[1]] or [r["nll"] for r in hpt[0]] != [
        r["nll"] for r in hpt[1]
    ]
    assert list(res["arms"]["base"]["seeds"]) == ["-"]
    # accuracy curves: base point at 0, then every kept checkpoint, steps cumulative over stages
    pts = res["curves"]["points"]["sft_then_grpo"]
    assert pts[0][0] == 0 and [p[0] for p in pts][-1] == c.budget.steps
    assert all(0.0 <= p[1] <= 1.0 for p in pts)
    assert set(res["passk"]["results"]) == {"base", "hpt"}
    assert set(res["passk"]["results"]["hpt"]["add_2"]["pass_at_k"]) == {"1", "2", "4"}
    report = open(os.path.join(c.run_dir, "REPORT.md")).read()
    assert "| HPT | " in report and " ± " in report and "| ID avg | OOD avg |" in report
    # the time: this invocation's wall time and the runs' recorded training time, summed
    train = sum(v["train"] for k, v in res["seconds"].items() if k != "total")
    assert f"training, summed over the {len(res['seconds']) - 1} runs' recorded steps: {train / 60:.1f} min" in report
    for name in ("training_curves", "gate_sft_fraction", "accuracy_curves", "pass_at_k"):
        path = os.path.join(c.run_dir, "plots", f"{name}.png")
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", path


@pytest.mark.slow  # shares the slow smoke fixture above
def test_rerun_reuses_runs_and_cached_evaluations(smoke, monkeypatch):
    c, _ = smoke
    calls = []
    ev = sys.modules["upt_jax.eval.evaluate"]  # the module (the package exports a function of that name)
    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: calls.append(1) or {})
    before = {
        d: os.path.getsize(os.path.join(d, "metrics.jsonl")) for d in cmp.final_run_dirs(*cmp.arm_config(c, "hpt", 0))
    }
    trainer_lib.train(c)
    assert calls == []  # every evaluation came from its cache
    for d, size in before.items():  # finished runs were not trained again
        assert os.path.getsize(os.path.join(d, "metrics.jsonl")) == size


def test_published_tables_match_the_published_results():
    """README and docs/paper_table.md quote docs/paper_table/results.json (the full run's output)."""
    from upt_jax.eval.metrics import group_average

    root = os.path.join(os.path.dirname(__file__), "..", "..")
    with open(os.path.join(root, "docs", "paper_table", "results.json")) as f:
        res = json.load(f)
    c = paper_table.get_config("full")
    readme = open(os.path.join(root, "README.md")).read()
    doc = open(os.path.join(root, "docs", "paper_table.md")).read()
    assert set(res["arms"]) == {"base"} | set(c.arms)
    for key, entry in res["arms"].items():
        seeds = [{s: r["avg_at_k"] for s, r in v.items()} for v in entry["seeds"].values()]
        want = 1 if key == "base" else len(c.arms[key].seeds or c.seeds)
        assert len(seeds) == want, key
        ms = group_average(seeds, list(c.eval.id_tiers))
        cell = ms.format(1, 100.0)
        assert cell in doc, (key, cell)
        if key in paper_table.MAIN:
            assert cell in readme, (key, cell)
        for _, tiers in c.eval.groups:  # nothing learned the hard or OOD tiers: the docs say 0
            assert group_average(seeds, list(tiers)).mean == 0.0
