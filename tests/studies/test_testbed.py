"""The testbed comparison (`experiments/testbed.py`): its arms and their SFT control, the paired
differences of summary.json against a hand computation on the cached per-question counts, and
the learning-rate sweep (`experiments/testbed_sweep.py`)."""

import json
import os

import numpy as np
import pytest

from experiments import testbed, testbed_sweep
from upt_jax import bases
from upt_jax.studies import comparison as cmp
from upt_jax.studies.comparison_report import arm_sentence, beats_sentence, groups_of, shown_path
from upt_jax.train import checks
from upt_jax.train import trainer as trainer_lib

ENTRY = {"base", "arm", "diff", "se", "seeds"}


@pytest.mark.parametrize("variant", ["full", "demo"])
def test_every_arm_starts_from_the_shipped_base_with_its_methods_budget(variant):
    c = cmp.with_sft_controls(testbed.get_config(variant))
    b = c.budget
    assert c.base.run_dir == bases.base_dir("arith_hint") and not c.base.get("module")  # no base training
    assert {"sft", "grpo", "grpo_sft_control"} <= set(c.arms) and c.eval.temperature == b.temperature == 1.0
    assert set(cmp.eval_suites(c.eval)) == set(testbed.ID_TIERS + testbed.OOD_TIERS)  # every tier evaluated
    for key in c.arms:
        kind, ac = cmp.arm_config(c, key, 0)
        stages = [ac[s] for s in ac.order] if kind == "pipeline" else [ac]
        assert sum(s.train.steps for s in stages) == b.steps, key
        assert stages[0].model.init == "checkpoint" and stages[0].model.checkpoint == c.base.run_dir
        for s in stages:  # each stage at its method's rate (SFT stages at SFT's, the SFT control at its own)
            rate = (
                testbed.SFT_CONTROL_RATE
                if key.endswith("_sft_control")
                else testbed.METHODS[s.recipe.name]["learning_rate"]
            )
            assert s.train.learning_rate == rate, key
            # every stage: constant, then linear to 0 over the last half of its own steps
            assert s.train.schedule == "wsd" and s.train.decay_steps == round(b.decay_frac * s.train.steps), key
            if s.mode == "online":
                assert s.train.questions_per_step == b.questions_per_step and s.rollout.n == b.n
            checks.check_recipe(s)
    tiers = lambda key, stage=None: tuple(  # noqa: E731
        (lambda k, c_: (c_[stage] if stage else c_).data.tiers)(*cmp.arm_config(c, key, 0))
    )
    assert tiers("grpo") == testbed.RL_MIX and tiers("sft") == testbed.SFT_MIX
    if "hpt" in c.arms:
        assert tiers("hpt") == tiers("luffy") == tiers("srft") == testbed.HYBRID_MIX
        assert tiers("sft_then_grpo", "sft") == testbed.SFT_MIX
    # 50 % of GRPO's questions replay the solved tiers; 75 % of SFT's
    assert sum(t in testbed.BASE_TIERS for t in testbed.RL_MIX) / len(testbed.RL_MIX) == 0.5
    assert sum(t not in testbed.SFT_TIERS for t in testbed.SFT_MIX) / len(testbed.SFT_MIX) == 0.75


def test_family_b_runs_with_family_as_settings_on_its_own_tiers():
    """`testbed.py:countdown` is the same comparison (arms, rates, budget, mixes' proportions) on the
    countdown family's tiers, from its own base; a token that is neither a variant nor a family is
    refused."""
    a, b = testbed.get_config("smoke"), testbed.get_config("smoke,countdown")
    assert (a.family, b.family) == ("arith_hint", "countdown") and b.base.module == "pretrain_countdown"
    assert b.run_dir == "runs/testbed_countdown_smoke" and a.run_dir == "runs/testbed_smoke"
    assert testbed.parse_arg("demo,countdown") == testbed.parse_arg("countdown,demo") == ("demo", "countdown")
    assert testbed.parse_arg(None) == ("full", "arith_hint")
    lay = testbed.layout("countdown")
    assert lay["rl"] == ("cd_3",) and lay["sft"] == ("cd_3m",) and set(lay["base"]) == {"cd_2", "cd_3p"}
    assert set(lay["ood"]) == {"cd_3r", "cd_4", "cd_4m"}  # the comparison reports every held-out tier
    for key in b.arms:  # family A's choices, except where countdown's own sweep chose (testbed.chosen)
        method = {"sft_then_grpo": "grpo", "grpo_sft_control": "grpo"}.get(key, key)
        if "countdown" in testbed.METHODS[method].get("by_family", {}):
            pick = testbed.chosen(method, "countdown")
            assert b.arms[key].learning_rate == pick["learning_rate"], key
            assert pick["hparams"].items() <= dict(b.arms[key].hparams).items(), key
            continue
        assert b.arms[key].learning_rate == a.arms[key].learning_rate, key
        assert b.arms[key].get("hparams") == a.arms[key].get("hparams"), key
    assert tuple(b.arms.sft.tiers) == lay["sft_mix"] and tuple(b.arms.grpo.tiers) == lay["rl_mix"]
    assert b.budget.to_dict() == a.budget.to_dict()
    with pytest.raises(ValueError, match="neither a variant"):
        testbed.get_config("countdwn")


def test_hpt_trains_with_the_coefficient_its_sweep_chose_and_the_ablations_keep_it():
    for variant in ("full", "ablations"):
        c = testbed.get_config(variant)
        for key in (k for k in c.arms if k.startswith("hpt")):
            assert c.arms[key].hparams["sft_loss_coef"] == testbed.METHODS["hpt"]["hparams"]["sft_loss_coef"], key
    assert testbed.METHODS["hpt"]["hparams"]["sft_loss_coef"] in testbed.METHODS["hpt"]["hparam_grid"]["sft_loss_coef"]


def test_the_ablations_variant_is_hpt_with_one_setting_changed_per_arm():
    c, full = cmp.with_sft_controls(testbed.get_config("ablations")), testbed.get_config("full")
    assert set(c.arms) == {"hpt", *testbed.ablation_arms()}
    _, ref = cmp.arm_config(c, "hpt", 0)
    changed = dict(
        hpt_gamma_1of8={"gamma": 0.125},
        hpt_gamma_2of8={"gamma": 0.25},
        hpt_offline_rl={"offline": "rl"},
        hpt_offline_both={"offline": "both"},
        hpt_released_code={"variant": "released_code"},
    )
    for key, diff in changed.items():
        _, ac = cmp.arm_config(c, key, 0)
        assert ac.recipe.name == "hpt" and dict(ac.recipe.hparams) == {**dict(ref.recipe.hparams), **diff}, key
        for field in ("data.tiers", "train.learning_rate", "train.steps", "rollout.n", "model.checkpoint"):
            part, name = field.split(".")
            assert ac[part][name] == ref[part][name], (key, field)
        checks.check_recipe(ac)
    assert tuple(ref.data.tiers) == tuple(full.arms.hpt.tiers) and c.eval.to_dict() == full.eval.to_dict()


def test_the_sft_tier_variant_trains_sft_alone_on_twice_the_budget_with_more_questions():
    c, full = testbed.get_config("sft_tier"), testbed.get_config("full")
    assert set(c.arms) == {"sft"} and c.budget.steps == 2 * full.budget.steps
    assert c.eval.n_per_tier == 256 and set(cmp.eval_suites(c.eval)) == set(testbed.ID_TIERS)
    assert c.arms.sft.to_dict() == full.arms.sft.to_dict()  # the same arm, rate and mix


def test_the_sft_control_learns_the_rl_arms_questions_in_the_same_order():
    c = cmp.with_sft_controls(testbed.get_config("full"))
    (_, rl), (_, ctl) = cmp.arm_config(c, "grpo", 1), cmp.arm_config(c, "grpo_sft_control", 1)
    assert ctl.recipe.name == "sft" and ctl.mode == "offline" and rl.mode == "online"
    assert ctl.train.learning_rate == testbed.SFT_CONTROL_RATE
    for key in ("seed", "data.tiers", "train.steps", "train.questions_per_step", "model.checkpoint"):
        get = lambda x: x.get(key) if "." not in key else x[key.split(".")[0]][key.split(".")[1]]  # noqa: E731
        assert get(ctl) == get(rl), key
    from upt_jax.data import make_dataset

    def batches(cfg, n=3):
        it = iter(
            make_dataset(
                trainer_lib.load_records(cfg),
                seed=cfg.seed,
                num_epochs=None,
                batch_size=cfg.train.questions_per_step,
                drop_remainder=True,
            )
        )
        return [[r["id"] for r in next(it)] for _ in range(n)]

    assert batches(rl) == batches(ctl)
    assert c.tables[0][1].index("grpo_sft_control") == c.tables[0][1].index("grpo") + 1
    again = cmp.with_sft_controls(c)  # idempotent
    assert list(again.arms) == list(c.arms) and again.tables == c.tables


def test_an_sft_control_of_a_pipeline_or_an_sft_arm_is_refused():
    c = testbed.get_config("full")
    c.arms.sft_then_grpo.sft_control = True
    with pytest.raises(ValueError, match="one-stage RL arm"):
        cmp.with_sft_controls(c)
    c = testbed.get_config("full")
    c.arms.sft.sft_control = True
    with pytest.raises(ValueError, match="mode 'offline'"):
        cmp.with_sft_controls(c)


def _entry(diff, se):
    return {"base": 0.5, "arm": 0.5 + diff, "diff": diff, "se": se, "seeds": ["0", "1"]}


def test_sentences_name_the_arms_that_beat_the_base_by_two_se():
    c = testbed.get_config("demo")
    won = {"hmul_2x1": _entry(0.12, 0.03), "hadd_2": _entry(-0.01, 0.01)}
    lost = {"hmul_2x1": _entry(0.05, 0.03), "hadd_4": _entry(0.0, 0.0)}
    assert arm_sentence("GRPO", won, ["hadd_2", "hmul_2x1"]).startswith(
        "**GRPO** beats the base by more than 2 SE on hmul_2x1 (+12.0 ± 3.0)"
    )
    assert "on no tier (closest: hmul_2x1 +5.0 ± 3.0" in arm_sentence("SFT", lost, ["hmul_2x1", "hadd_4"])
    assert beats_sentence(c, {"vs_base": {"grpo": won, "sft": lost}}) == (
        "Beat the base model by more than 2 standard errors on some tier: GRPO (hmul_2x1)."
    )
    assert beats_sentence(c, {"vs_base": {"sft": lost}}).startswith("No arm beats the base model")
    # a group beating the base is not a tier beating it
    assert beats_sentence(c, {"vs_base": {"sft": {"ID avg": _entry(0.2, 0.01)}}}).startswith("No arm")


def test_reports_show_paths_relative_to_the_report_or_the_repository(tmp_path):
    run = str(tmp_path / "run")
    assert shown_path(os.path.join(run, "plots", "a.png"), run) == os.path.join("plots", "a.png")
    assert shown_path(bases.base_dir("arith_hint", verify=False), run) == os.path.join("upt_jax", "bases", "arith_hint")
    assert shown_path("/elsewhere/base", run) == "/elsewhere/base"  # outside both: as given
    assert shown_path(str(tmp_path / "runner"), run) == str(tmp_path / "runner")  # a sibling, not inside


def test_a_shipped_base_is_evaluated_into_the_comparisons_directory_and_may_not_change(tmp_path):
    import shutil

    c = testbed.get_config("demo")
    testbed.set_run_dir(c, str(tmp_path / "run"))
    os.makedirs(c.run_dir)
    cmp.check_same_base(c, c.base.run_dir)  # records the checksum
    copy = tmp_path / "rebuilt"
    shutil.copytree(c.base.run_dir, copy)
    record = json.loads((copy / "record.json").read_text())
    record["weights_sha256"] = "0" * 64
    (copy / "record.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="rebuilt base"):
        cmp.check_same_base(c, str(copy))
    settings = dict(suites=["hadd_2"], n=1, k=1, temperature=1.0, max_new_tokens=4, seed=0)
    res = cmp.base_eval(c, c.base.run_dir, settings, None)
    assert res["hadd_2"]["num_questions"] == 1
    assert os.listdir(os.path.join(c.run_dir, "base_eval")) and "eval" not in os.listdir(c.base.run_dir)


# ----------------------------------------------------------------------------- the smoke comparison
class _LengthVerifier:
    """Stands in for the evaluation's verifier: a sample is 'correct' when its text has an even
    length, so a random tiny model gets per-question counts that vary between models, seeds and
    questions (it never answers right), and the paired differences are not all 0."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, texts, golds, kinds):
        from upt_jax.rewards import Reward

        return [Reward(float(len(t) % 2 == 0), "correct" if len(t) % 2 == 0 else "wrong") for t in texts]

    def close(self):
        pass


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    import upt_jax.rewards

    c = testbed.get_config("smoke")
    testbed.set_run_dir(c, str(tmp_path_factory.mktemp("testbed") / "run"))
    del c.arms["sft"]
    # GRPO (a curves arm) in a second table: it trains after the main table's runs, as an ablation
    c.tables = (("Main", ("base", "hpt")), ("GRPO", ("base", "grpo")))
    c.paired_against = ("hpt", ("grpo", "grpo_sft_control"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(upt_jax.rewards, "RoutedVerifier", _LengthVerifier)
        # one process's share first (only_arms), then the run over every arm reuses it
        share = cmp.run_comparison(dict_copy(c, only_arms=("hpt",)))
        assert set(share["arms"]) == {"base", "hpt"} and "curves" not in share
        metrics = os.path.join(share["arms"]["hpt"]["run_dirs"]["0"][-1], "metrics.jsonl")
        size = os.path.getsize(metrics)
        results = cmp.run_comparison(c)
    assert os.path.getsize(metrics) == size  # the share's run was reused, not trained again
    # the reused run reports the training time it took in the share (from its log), not ~0
    assert results["seconds"]["hpt/0"]["train"] == share["seconds"]["hpt/0"]["train"] > 0
    assert results["seconds"]["hpt/0"]["wall"] < share["seconds"]["hpt/0"]["wall"]
    return cmp.with_sft_controls(c), results


def dict_copy(c, **changes):
    import copy

    c = copy.deepcopy(c)
    c.update(changes)
    return c


def _hand(results, arm, tiers, against="base"):
    """The paired difference computed by hand from results.json's per-question counts."""

    def acc(seed_res):  # {id: correct / k} over the tiers
        return {i: n / r["k"] for t in tiers for r in [seed_res[t]] for i, n in zip(r["ids"], r["correct_counts"])}

    arms = [acc(s) for s in results["arms"][arm]["seeds"].values()]
    base = [acc(s) for s in results["arms"][against]["seeds"].values()]
    ids = sorted(base[0])
    a = np.mean([[x[i] for i in ids] for x in arms], axis=0)
    b = np.mean([[x[i] for i in ids] for x in base], axis=0)
    return float(np.mean(b)), float(np.mean(a)), float(np.mean(a - b))


def test_summary_holds_each_arms_paired_difference_as_computed_by_hand(smoke):
    c, _ = smoke
    with open(os.path.join(c.run_dir, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(c.run_dir, "results.json")) as f:
        results = json.load(f)
    assert set(summary) == {"grpo", "grpo_sft_control", "hpt"}
    suites = cmp.eval_suites(c.eval)
    groups = dict(groups_of(c.eval))
    assert set(groups) == {"ID avg", "RL tier", "OOD avg"}
    diffs = [e["diff"] for entries in summary.values() for e in entries.values()]
    assert len(set(diffs)) >= 3 and any(e["se"] > 0 for entries in summary.values() for e in entries.values())
    for arm, entries in summary.items():
        assert set(entries) == set(suites) | set(groups)
        assert entries["hmul_2x1"]["seeds"] == [str(s) for s in (c.arms[arm].seeds or c.seeds)]
        for name, e in entries.items():
            assert set(e) == ENTRY and e["se"] >= 0
            base, armv, diff = _hand(results, arm, groups.get(name, [name]))
            assert (e["base"], e["arm"], e["diff"]) == pytest.approx((base, armv, diff), abs=1e-12), (arm, name)
    # the base has base_k samples per question, the arms k; both on the same questions
    base_res = results["arms"]["base"]["seeds"]["-"]["hmul_2x1"]
    arm_res = results["arms"]["grpo"]["seeds"]["0"]["hmul_2x1"]
    assert (base_res["k"], arm_res["k"]) == (c.eval.base_k, c.eval.k) and base_res["ids"] == arm_res["ids"]
    # HPT against each baseline: HPT's seeds against the baseline's
    vs = results["paired"]["vs"]["hpt"]
    assert set(vs) == {"grpo", "grpo_sft_control"}
    for other, entries in vs.items():
        for name, e in entries.items():
            _, _, diff = _hand(results, "hpt", groups.get(name, [name]), against=other)
            assert e["diff"] == pytest.approx(diff, abs=1e-12)


def test_report_says_for_each_arm_whether_it_beats_the_base_and_plots_per_tier(smoke):
    c, _ = smoke
    report = open(os.path.join(c.run_dir, "REPORT.md")).read()
    assert "## Paired differences against the base model" in report and "## HPT against each baseline" in report
    for label in ("GRPO", "HPT", "SFT control (GRPO's questions)"):
        assert (
            sum(line.startswith(f"- **{label}** beats the base by more than 2 SE on ") for line in report.splitlines())
            == 1
        ), label
    assert "| SFT control (GRPO's questions) | – | sft | hmul_2x1 ×2, hadd_2, hadd_3 |" in report
    # a run directory copied into docs/ links its plots and names its base without this machine's paths
    assert "- training reward per tier: [`plots/tier_rewards.png`](plots/tier_rewards.png)" in report
    assert "starts from the base model `base` and" in report and c.run_dir not in report
    # the time: this invocation's wall time, and the runs' recorded training time summed
    with open(os.path.join(c.run_dir, "results.json")) as f:
        secs = json.load(f)["seconds"]
    train = sum(v["train"] for k, v in secs.items() if k != "total")
    assert f"training, summed over the {len(secs) - 1} runs' recorded steps: {train / 60:.1f} min" in report
    from matplotlib.image import imread

    for name in ("tier_rewards", "tier_accuracy_curves", "training_curves", "accuracy_curves"):
        path = os.path.join(c.run_dir, "plots", f"{name}.png")
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
        # lines were drawn: coloured pixels (every plot was once empty axes, the panels' axes an
        # exhausted iterator), not only the white, grey and black of empty axes
        rgb = imread(path)[..., :3]
        assert (rgb.max(-1) - rgb.min(-1) > 0.3).sum() > 50, f"{name}: no line drawn"
    rows = cmp.read_metrics(smoke[1]["arms"]["grpo"]["run_dirs"]["0"])
    assert all("reward/hmul_2x1" in r or "reward/hadd_2" in r for r in rows)
    curves = smoke[1]["curves"]["tiers"]["grpo"]
    assert set(curves) == set(c.curves.tiers) and [s for s, _ in curves["hmul_2x1"]][0] == 0
    # an arm trained after the main table (the ablations' released-code arm) has its checkpoints too,
    # not only the base's step 0 (the curves were once made before it had trained)
    late = smoke[1]["curves"]["points"]["grpo"]
    assert [s for s, _ in late][0] == 0 and [s for s, _ in late][-1] == c.budget.steps


def test_only_arms_splits_the_comparison_into_shares_that_together_run_every_job_once():
    """``only_arms`` (one process's share of a comparison; a last run over every arm assembles):
    a share runs its arms' jobs, each with its SFT control, and complementary shares cover the
    comparison's jobs exactly once, in its order."""
    c = cmp.with_sft_controls(testbed.get_config("full"))
    every = cmp.job_order(c)
    shares = [("sft", "grpo", "sft_then_grpo"), ("luffy", "srft", "hpt")]
    runs = []
    for share in shares:
        c.only_arms = share
        jobs = cmp.job_order(c)
        assert {a for a, _ in jobs} == set(share) | ({"grpo_sft_control"} if "grpo" in share else set())
        assert jobs == [j for j in every if j in jobs]
        runs += jobs
    assert sorted(runs) == sorted(every) and len(runs) == len(every)
    for spelled in (("(luffy,srft,hpt)",), ("luffy, srft,hpt",), ("'luffy'", "srft", "hpt")):
        c.only_arms = spelled  # as the command line may pass it
        assert cmp.only_arms(c) == ("luffy", "srft", "hpt")
    c.only_arms = ("hpt", "nope")
    with pytest.raises(ValueError, match="unknown arms"):
        cmp.job_order(c)


def test_the_sweep_has_one_arm_per_method_and_rate_and_picks_the_best_id_average():
    """The fast twin of the sweep's run below: its config and its scoring, on made-up results."""
    c = testbed_sweep.get_config("full", methods=("sft", "grpo"), grids={"sft": (1e-4, 1e-3), "grpo": (2e-5,)})
    assert set(c.arms) == {"sft_lr0p0001", "sft_lr0p001", "grpo_lr2e-05"} and c.seeds == (0,)
    assert c.eval.data_seed == testbed_sweep.VALIDATION_SEED and c.run_dir == "runs/testbed_sweep"
    for key in c.arms:  # the comparison's arm of that method, at the sweep's rate and the same budget
        kind, ac = cmp.arm_config(c, key, 0)
        assert ac.train.learning_rate == c.arms[key].learning_rate and ac.train.steps == c.budget.steps
        assert tuple(ac.data.tiers) == (testbed.SFT_MIX if key.startswith("sft") else testbed.RL_MIX)
        assert "sft_control" not in c.arms[key]
    diffs = {"sft_lr0p0001": 0.02, "sft_lr0p001": 0.05, "grpo_lr2e-05": -0.01}
    results = {
        "paired": {"vs_base": {k: {"ID avg": _entry(d, 0.01), "hadd_2": _entry(0.0, 0.0)} for k, d in diffs.items()}}
    }
    out = testbed_sweep.sweep_results(c, results)
    assert out["methods"]["sft"]["best"] == 1e-3 and out["methods"]["grpo"]["best"] == 2e-5
    assert out["methods"]["sft"]["scores"] == {"0.0001": 0.02, "0.001": 0.05}
    assert out["validation_seed"] == testbed_sweep.VALIDATION_SEED and out["budget"]["steps"] == c.budget.steps
    with pytest.raises(ValueError, match="unknown methods"):
        testbed_sweep.get_config("full", methods=("sft_then_grpo",))


def test_a_sweep_run_method_by_method_keeps_every_point_in_sweep_json(tmp_path, monkeypatch):
    """``--methods`` in a directory that already has a sweep.json merges (the earlier methods and
    rates kept, each best chosen again over the union); a sweep.json of other settings (another
    budget) is kept beside as sweep.1.json, not overwritten."""

    def fake(diffs):
        vs = {k: {"ID avg": _entry(d, 0.01)} for k, d in diffs.items()}
        return lambda c: {"paired": {"vs_base": {k: v for k, v in vs.items() if k in c.arms}}}

    run_dir = str(tmp_path / "sweep")
    c1 = testbed_sweep.get_config("full", methods=("sft",), grids={"sft": (1e-4, 1e-3)})
    c1.run_dir = run_dir
    monkeypatch.setattr(cmp, "run_comparison", fake({"sft_lr0p0001": 0.02, "sft_lr0p001": 0.05}))
    testbed_sweep.run(c1)
    c2 = testbed_sweep.get_config("full", methods=("sft", "grpo"), grids={"sft": (3e-3,), "grpo": (2e-5,)})
    c2.run_dir = run_dir
    monkeypatch.setattr(cmp, "run_comparison", fake({"sft_lr0p003": 0.08, "grpo_lr2e-05": -0.01}))
    out = testbed_sweep.run(c2)
    assert out["methods"]["sft"]["scores"] == {"0.0001": 0.02, "0.001": 0.05, "0.003": 0.08}
    assert out["methods"]["sft"]["best"] == 3e-3 and out["methods"]["grpo"]["best"] == 2e-5
    with open(os.path.join(run_dir, "sweep.json")) as f:
        assert json.load(f) == json.loads(json.dumps(out))
    c3 = testbed_sweep.get_config("full", methods=("grpo",), grids={"grpo": (2e-5,)})
    c3.run_dir, c3.budget.steps = run_dir, c3.budget.steps + 1
    assert set(testbed_sweep.run(c3)["methods"]) == {"grpo"}  # another budget: not merged...
    with open(os.path.join(run_dir, "sweep.1.json")) as f:
        assert set(json.load(f)["methods"]) == {"sft", "grpo"}  # ...and the earlier file kept


def test_the_sweep_command_takes_extra_rates_for_the_methods_named(tmp_path, monkeypatch):
    """``--rates`` replaces every named method's grid (one more point of a grid already run, in
    its own run directory)."""
    seen = []
    monkeypatch.setattr(testbed_sweep, "run", lambda c: seen.append(c) or {})
    testbed_sweep.main([str(tmp_path / "more"), "--methods", "hpt,srft", "--rates", "3e-3,1e-2"])
    (c,) = seen
    assert sorted(c.arms) == ["hpt_lr0p003", "hpt_lr0p01", "srft_lr0p003", "srft_lr0p01"]
    assert c.run_dir == str(tmp_path / "more") and c.arms.hpt_lr0p01.learning_rate == 1e-2
    testbed_sweep.main([str(tmp_path / "grid"), "--methods", "sft"])
    assert [seen[1].arms[k].learning_rate for k in seen[1].arms] == list(testbed.METHODS["sft"]["grid"])


def test_a_family_can_have_its_own_chosen_rate_and_hyperparameters(monkeypatch):
    """`testbed.chosen`: a method's ``by_family`` entry (its own validation sweep on that family)
    sets its arms there, and only there; the others keep family A's choice."""
    methods = {k: dict(v) for k, v in testbed.METHODS.items()}
    methods["srft"]["by_family"] = dict(countdown=dict(learning_rate=1e-4, hparams=dict(rl_coef=1.0)))
    monkeypatch.setattr(testbed, "METHODS", methods)
    monkeypatch.setattr(testbed_sweep.testbed, "METHODS", methods)  # the sweep loads testbed.py by path
    a, b = testbed.get_config("full"), testbed.get_config("countdown")
    assert b.arms.srft.learning_rate == 1e-4 and b.arms.srft.hparams["rl_coef"] == 1.0
    assert a.arms.srft.learning_rate == methods["srft"]["learning_rate"] and "rl_coef" not in a.arms.srft.hparams
    for key in (k for k in a.arms if k != "srft"):
        assert b.arms[key].learning_rate == a.arms[key].learning_rate, key
    kind, ac = cmp.arm_config(b, "srft", 0)
    assert ac.train.learning_rate == 1e-4 and ac.recipe.hparams.rl_coef == 1.0
    assert testbed.chosen("srft", "arith_hint") == dict(learning_rate=methods["srft"]["learning_rate"], hparams={})
    # the countdown sweep reads the countdown choice as the method's chosen rate
    sc = testbed_sweep.get_config("full,countdown", methods=("srft",), hparam_grids={"srft": {"sft_coef": (1.0,)}})
    assert [sc.arms[k].learning_rate for k in sc.arms] == [1e-4]


def test_the_sweep_runs_on_either_family(tmp_path, monkeypatch):
    """``--variant countdown``: the same arms on countdown's tiers, base and validation split (a
    method's rate chosen on one family can forget on the other: SRFT on countdown)."""
    seen = []
    monkeypatch.setattr(testbed_sweep, "run", lambda c: seen.append(c) or {})
    testbed_sweep.main([str(tmp_path / "cd"), "--variant", "countdown", "--methods", "srft", "--rates", "3e-4"])
    (c,) = seen
    assert c.family == "countdown" and c.name == "testbed_sweep_countdown_full"
    assert c.base.run_dir == bases.base_dir("countdown") and "cd_3" in c.eval.id_tiers
    assert list(c.arms) == ["srft_lr0p0003"] and c.eval.data_seed == testbed_sweep.VALIDATION_SEED
    with pytest.raises(SystemExit):  # the sweep is of the full (or smoke) comparison only
        testbed_sweep.main([str(tmp_path / "x"), "--variant", "ablations,countdown"])
    with pytest.raises(ValueError, match="neither a variant"):
        testbed_sweep.main([str(tmp_path / "x"), "--variant", "nope"])


def test_the_sweep_takes_a_loss_coefficient_at_the_chosen_rate_and_counts_the_default_as_a_point(tmp_path, monkeypatch):
    """``--hparam sft_loss_coef=0.1,0.3``: one HPT arm per value at HPT's chosen rate (no rate grid
    unless asked); the best value is chosen among them and, when the sweep has the rate arm at that
    rate, HPT's default value (1.0) scored by it."""
    seen = []
    monkeypatch.setattr(testbed_sweep, "run", lambda c: seen.append(c) or {})
    testbed_sweep.main([str(tmp_path / "coef"), "--methods", "hpt", "--hparam", "sft_loss_coef=0.1,0.3"])
    (c,) = seen
    lr = testbed.METHODS["hpt"]["learning_rate"]
    key = testbed_sweep._key("hpt", lr)
    k1, k3 = (testbed_sweep._key("hpt", lr, ("sft_loss_coef", v)) for v in (0.1, 0.3))
    assert sorted(c.arms) == sorted([k1, k3]) and k1 == key + "_sft_loss_coef0p1"
    for k, value in ((k1, 0.1), (k3, 0.3)):
        _, ac = cmp.arm_config(c, k, 0)
        assert ac.train.learning_rate == lr and dict(ac.recipe.hparams) == {
            "variant": "paper_text",
            "gamma": 0.0,
            "sft_loss_coef": value,
        }
        checks.check_recipe(ac)
    c = testbed_sweep.get_config(
        "full", methods=("hpt",), grids={"hpt": (lr,)}, hparam_grids={"hpt": {"sft_loss_coef": (0.1, 0.3)}}
    )
    _, rate_arm = cmp.arm_config(c, key, 0)  # the rate grid's arm: HPT's default coefficient
    assert "sft_loss_coef" not in rate_arm.recipe.hparams
    diffs = {key: -0.10, k1: 0.02, k3: -0.01}
    results = {"paired": {"vs_base": {k: {"ID avg": _entry(d, 0.01)} for k, d in diffs.items()}}}
    m = testbed_sweep.sweep_results(c, results)["methods"]["hpt"]
    assert m["scores"] == {f"{lr:g}": -0.10} and m["hparam_scores"] == {"sft_loss_coef": {"0.1": 0.02, "0.3": -0.01}}
    assert m["best_hparams"] == {"sft_loss_coef": 0.1}
    results["paired"]["vs_base"][key]["ID avg"] = _entry(0.05, 0.01)  # the default (1.0) wins
    assert testbed_sweep.sweep_results(c, results)["methods"]["hpt"]["best_hparams"] == {"sft_loss_coef": 1.0}


def test_a_coefficient_sweep_without_rate_arms_chooses_among_its_values():
    """``--hparam`` alone (the docstring's command: no rate arm, so no default value's point):
    the scores are read without one (this raised StopIteration looking for a rate arm)."""
    c = testbed_sweep.get_config("full", methods=("hpt",), hparam_grids={"hpt": {"sft_loss_coef": (0.1, 0.3)}})
    lr = testbed.METHODS["hpt"]["learning_rate"]
    diffs = {testbed_sweep._key("hpt", lr, ("sft_loss_coef", v)): d for v, d in ((0.1, -0.02), (0.3, 0.01))}
    results = {"paired": {"vs_base": {k: {"ID avg": _entry(d, 0.01)} for k, d in diffs.items()}}}
    m = testbed_sweep.sweep_results(c, results)["methods"]["hpt"]
    assert m["scores"] == {} and "best" not in m
    assert m["best_hparams"] == {"sft_loss_coef": 0.3}
    assert m["best_joint"] == {"sft_loss_coef": {"learning_rate": lr, "value": 0.3, "score": 0.01}}


def test_the_joint_sweep_runs_every_value_at_every_rate_and_picks_the_best_pair(tmp_path, monkeypatch):
    """``--rates 1e-4,3e-4 --hparam sft_loss_coef=0.01,0.1 --joint``: one HPT arm per (rate, value)
    plus the rate arms (the default value's points); ``best_joint`` is the best of all of them, and
    the chosen-rate view (``hparam_scores``) holds only the arms at the chosen rate."""
    seen = []
    monkeypatch.setattr(testbed_sweep, "run", lambda c: seen.append(c) or {})
    methods = testbed_sweep.testbed.METHODS  # the module the sweep reads (loaded by path)
    monkeypatch.setitem(methods, "hpt", dict(methods["hpt"], learning_rate=1e-3))  # the chosen rate
    argv = [str(tmp_path / "j"), "--methods", "hpt", "--rates", "1e-4,1e-3", "--hparam", "sft_loss_coef=0.01,0.1"]
    testbed_sweep.main(argv + ["--joint"])
    (c,) = seen
    assert sorted(c.arms) == [
        "hpt_lr0p0001",
        "hpt_lr0p0001_sft_loss_coef0p01",
        "hpt_lr0p0001_sft_loss_coef0p1",
        "hpt_lr0p001",
        "hpt_lr0p001_sft_loss_coef0p01",
        "hpt_lr0p001_sft_loss_coef0p1",
    ]
    _, ac = cmp.arm_config(c, "hpt_lr0p0001_sft_loss_coef0p01", 0)
    assert ac.train.learning_rate == 1e-4 and ac.recipe.hparams.sft_loss_coef == 0.01
    with pytest.raises(SystemExit):  # a joint grid needs both axes
        testbed_sweep.main(argv[:5] + ["--joint"])
    diffs = {
        "hpt_lr0p0001": -0.30,
        "hpt_lr0p0001_sft_loss_coef0p01": 0.04,
        "hpt_lr0p0001_sft_loss_coef0p1": -0.20,
        "hpt_lr0p001": -0.11,
        "hpt_lr0p001_sft_loss_coef0p01": -0.06,
        "hpt_lr0p001_sft_loss_coef0p1": -0.03,
    }
    results = {"paired": {"vs_base": {k: {"ID avg": _entry(d, 0.01)} for k, d in diffs.items()}}}
    m = testbed_sweep.sweep_results(c, results)["methods"]["hpt"]
    assert m["joint"] == {
        "sft_loss_coef": {
            "0.0001": {"0.01": 0.04, "0.1": -0.20, "1": -0.30},
            "0.001": {"0.01": -0.06, "0.1": -0.03, "1": -0.11},
        }
    }
    assert m["best_joint"] == {"sft_loss_coef": {"learning_rate": 1e-4, "value": 0.01, "score": 0.04}}
    assert m["hparam_scores"] == {"sft_loss_coef": {"0.01": -0.06, "0.1": -0.03}}  # at the chosen rate, 1e-3
    assert m["best_hparams"] == {"sft_loss_coef": 0.1} and m["best"] == 1e-3


@pytest.mark.slow
def test_the_sweep_scores_each_rate_on_the_validation_split(tmp_path):
    c = testbed_sweep.get_config("smoke", methods=("sft",), grids={"sft": (1e-3, 1e-2)})
    testbed.set_run_dir(c, str(tmp_path / "sweep"))
    assert c.eval.data_seed == testbed_sweep.VALIDATION_SEED != testbed.get_config("smoke").eval.get("data_seed")
    assert [c.arms[k].learning_rate for k in c.tables[0][1][1:]] == [1e-3, 1e-2]
    out = testbed_sweep.run(c)
    with open(tmp_path / "sweep" / "sweep.json") as f:
        assert json.load(f) == json.loads(json.dumps(out))
    m = out["methods"]["sft"]
    assert set(m["scores"]) == {"0.001", "0.01"} and m["best"] in (1e-3, 1e-2)
    assert m["scores"][f"{m['best']:g}"] == max(m["scores"].values())
    for rate, entries in m["rates"].items():
        assert entries["ID avg"]["diff"] == m["scores"][rate]
    # validation questions: drawn with the validation seed, not the test questions' seed
    with open(tmp_path / "sweep" / "results.json") as f:
        ids = json.load(f)["arms"]["base"]["seeds"]["-"]["hmul_2x1"]["ids"]
    assert all(i.startswith(f"hmul_2x1/{testbed_sweep.VALIDATION_SEED}/") for i in ids)


def test_a_missing_base_with_nothing_to_train_it_is_a_clear_error(tmp_path):
    c = testbed.get_config("demo")
    c.base.run_dir = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="neither a shipped model directory"):
        cmp.ensure_base(c)


def test_evaluating_a_shipped_model_directory_never_writes_into_it(tmp_path, monkeypatch):
    """The shipped base is package data: an evaluation without a cache directory is not cached
    there (a learning check once left ``bases/arith_hint/eval/`` behind, and it was committed)."""
    import shutil

    from upt_jax.studies import comparison_eval

    base = tmp_path / "arith_hint"
    shutil.copytree(bases.base_dir("arith_hint"), base)
    settings = dict(suites=["hadd_2"], n=2, k=1, temperature=0.0, max_new_tokens=8, seed=0)
    first = comparison_eval.evaluate_run(str(base), settings)
    assert sorted(os.listdir(base)) == ["model.json", "model.safetensors", "record.json"]
    again = comparison_eval.evaluate_run(str(base), settings, cache_dir=str(tmp_path / "cache"))
    same = lambda r: (r["hadd_2"]["correct_counts"], r["hadd_2"]["ids"])  # noqa: E731 (not its timing)
    assert same(again) == same(first) and os.listdir(tmp_path / "cache")  # with a cache directory: cached there
