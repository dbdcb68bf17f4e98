"""The learning checks (issue #22, `upt_jax.studies.learning`): every check builds a valid training
config from the shipped base; the paired rows against a hand computation; the implicit-reward
preference accuracy; smokes of the checks on a tiny random base (one per kind of metric in the
default suite, every check under ``slow``); and the full checks (3 seeds, the shipped base) under
``slow``, each asserting its regime's effect beyond 2 SE."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from benchmarks import learning as bench
from upt_jax import bases
from upt_jax.studies import comparison as cmp
from upt_jax.studies import learning, learning_report, learning_run
from upt_jax.studies import learning_metrics as lm
from upt_jax.train import checks, schema
from upt_jax.train.frozen import load_critic
from upt_jax.train import trainer as trainer_lib

KEYS = [c.key for c in learning.CHECKS]


def test_the_checks_cover_every_regime_the_issue_names():
    assert {
        "sft",
        "rft",
        "star",
        "grpo",
        "dr_grpo",
        "grpo_lora",
        "ppo",
        "dpo",
        "ipo",
        "simpo",
        "orpo",
        "kto",
        "distill_fkl",
        "distill_on_policy",
        "luffy",
        "srft",
        "hpt",
        "reward_model",
        "rlhf_ppo",
        "prm",
    } <= set(KEYS)
    assert [c.key for c in learning.checks("dpo, grpo,dpo")] == ["dpo", "grpo"]  # the order asked, once each
    assert [c.key for c in learning.checks()] == KEYS
    with pytest.raises(KeyError, match="unknown learning checks"):
        learning.checks("grpo,nope")
    with pytest.raises(ValueError, match="metric"):
        learning.Check("x", "X", "sft", metric="vibes")


@pytest.mark.parametrize("key", KEYS)
def test_every_check_trains_its_regime_from_the_shipped_base(key):
    check = learning.checks(key)[0]
    base = learning_run.shipped_base(check.family)
    c = learning.study_config(check, "/tmp/learning_cfg", base=base, seeds=(0, 1, 2))
    kind, tc = cmp.arm_config(c, key, 1)
    assert kind == "train" and tc.seed == 1 and tc.run_dir == f"/tmp/learning_cfg/{key}/seed1"
    assert tc.model.init == "checkpoint" and tc.model.checkpoint == bases.base_dir(check.family)
    assert tc.train.steps == check.steps and tc.train.learning_rate == check.learning_rate
    assert tuple(tc.data.tiers) == check.tiers and tc.rollout.temperature == 1.0
    assert tc.rollout.max_new_tokens == learning.token_budget(check, learning.FULL)
    schema.validate(tc)
    checks.check_recipe(tc)  # group sizes fit the recipe's parts
    for k, v in check.overrides:  # the regime's own settings reach the training config
        node = tc
        for part in k.split("."):
            node = node[part]
        assert node == v, k
    if key == "grpo_lora":
        assert tc.model.lora.rank == 16 and tc.recipe.name == "grpo"
    if check.metric == "preference":
        assert tc.mode == "preference" and tc.recipe.name == check.arg
    if key == "hpt":
        assert tc.recipe.hparams.gamma == 0.0


def test_a_check_on_another_family_targets_its_tier_with_its_own_pairs_and_guards(monkeypatch):
    """SimPO and ORPO run on countdown's held-out four-number tier (arith_hint's RL-tier pairs are a
    ceiling for a reference-free implicit reward): that family's shipped base and base tiers, pairs
    of their own (not the DPO checks'), the longer token budget, and the tier named in the row."""
    simpo, dpo = learning.checks("simpo,dpo")
    assert (simpo.family, learning.target_tier(simpo), learning.solved_tiers(simpo)) == (
        "countdown",
        "cd_4",
        ("cd_2", "cd_3p"),
    )
    assert (dpo.family, learning.target_tier(dpo), learning.solved_tiers(dpo)) == (
        "arith_hint",
        "hmul_2x1",
        ("hadd_2", "hadd_3"),
    )
    assert learning.pairs_dir(simpo, "/r") == "/r/pairs_cd_4" and learning.pairs_dir(dpo, "/r") == "/r/pairs"
    assert "cd_4" in learning.accuracy_metric(simpo) and learning.accuracy_metric(dpo) == learning.METRICS["accuracy"]
    assert learning.token_budget(simpo, learning.FULL) == 256 and learning.token_budget(dpo, learning.FULL) == 192
    assert learning.token_budget(simpo, learning.SMOKE) == learning.SMOKE.token_cap  # the smoke's cap holds
    assert learning_run.shipped_base("countdown")["run_dir"] == bases.base_dir("countdown")
    c = learning.study_config(simpo, "/runs", base=learning_run.shipped_base("countdown"), seeds=(0,))
    assert tuple(c.eval.id_tiers) == ("cd_4", "cd_2", "cd_3p") and c.eval.max_new_tokens == 256
    made = []
    monkeypatch.setattr(lm, "preference_pairs", lambda base, out, **kw: made.append((base, out, kw)) or {})
    out = learning_run.prepare(simpo, c, "/cd_base", "/runs", learning.FULL)
    ((base, where, kw),) = made
    assert (base, where, kw["tier"], kw["max_new_tokens"]) == ("/cd_base", "/runs/pairs_cd_4", "cd_4", 256)
    assert dict(out["overrides"])["data.path"] == "/runs/pairs_cd_4/pairs.jsonl"
    with pytest.raises(ValueError, match="no tier of countdown"):
        learning.Check("x", "X", "dpo", "simpo", family="countdown", target="hmul_2x1")


def test_a_student_check_perturbs_the_base_by_its_own_noise_or_the_scales(monkeypatch):
    """On-policy distillation starts from a student on its teacher's support (0.3 · rms: its own
    samples are often right); forward KL from the scale's 1.0 (a student at 0 %)."""
    made = []
    monkeypatch.setattr(lm, "perturbed_student", lambda base, out, noise: made.append((out, noise)) or out)
    for key, noise in (("distill_on_policy", 0.3), ("distill_fkl", learning.FULL.noise)):
        check = learning.checks(key)[0]
        assert (check.noise if check.noise is not None else learning.FULL.noise) == noise
        out = learning_run.prepare(check, None, "/base", "/runs", learning.FULL)
        assert made[-1] == (f"/runs/student_{noise:g}", noise) and out["start"] == made[-1][0]
        assert dict(out["overrides"]) == {"model.checkpoint": made[-1][0], "teacher.run_dir": "/base"}


def test_preference_pairs_are_disjoint_up_to_the_cap_one_per_held_out_question(tmp_path, monkeypatch):
    """A training question gives min(correct, incorrect, cap) pairs, none sharing a sample; a held-out
    question one (its paired SE counts questions, not pairs)."""
    k = 6

    def fake_samples(model_dir, records, *, k, max_new_tokens, seed, samplers=None):
        rows = []
        for i, r in enumerate(records):  # question i: i % (k + 1) correct samples of k
            for j in range(k):
                reason = "correct" if j < i % (k + 1) else "wrong"
                rows.append(dict(id=str(r["id"]), completion=f"{r['id']}#{j}", reason=reason))
        return rows

    monkeypatch.setattr(lm, "sample_completions", fake_samples)
    stats = lm.preference_pairs(
        "/base",
        str(tmp_path),
        tier="hmul_2x1",
        n_train=21,
        n_heldout=7,
        k=k,
        max_new_tokens=8,
        eval_seed=5,
        pairs_per_question=2,
    )
    train, held = lm.read_jsonl(tmp_path / "pairs.jsonl"), lm.read_jsonl(tmp_path / "heldout.jsonl")
    want = sum(min(i % (k + 1), k - i % (k + 1), 2) for i in range(21))
    assert len(train) == want == stats["train"]["pair_rows"]
    assert len({p["id"] for p in train}) == want  # ids stay unique: <id>, then <id>/<j>
    for side in ("chosen", "rejected"):
        assert len({p[side] for p in train}) == want  # no sample in two pairs
    assert all(p["chosen"] != p["rejected"] for p in train)
    with_pair = [i for i in range(7) if 0 < i % (k + 1) < k]
    assert len(held) == len(with_pair) == stats["heldout"]["pairs"]
    assert stats["heldout"]["all_wrong"] == 1 and stats["heldout"]["all_correct"] == 1
    assert len(lm.read_jsonl(tmp_path / "kto.jsonl")) == 2 * want


def test_the_prm_majority_rule_scores_the_label_rate():
    """``step_accuracy(None, …)`` calls every step right: its per-question score is the fraction of
    steps labelled right, the floor a PRM's accuracy is compared with."""
    from upt_jax.data import tasks
    from upt_jax.train.run_model import load_run_model

    _, tok, cfg, _ = load_run_model(bases.base_dir(learning.FAMILY))
    records = tasks.generate(learning.RL_TIERS[0], 40, seed=3)
    got = lm.step_accuracy(None, None, tok, cfg.data.get("template", "zero"), records, seed=11)
    assert set(got) == {r["id"] for r in records}
    assert 0.2 < np.mean([v == 1.0 for v in got.values()]) < 0.8  # about half the rows clean
    for r in records:  # a corrupted row: right are the steps before its corrupted line (one with a result)
        lines = r["demonstration"].split("\n")
        allowed = {1.0} | {j / len(lines) for j, line in enumerate(lines) if "=" in line}
        assert min(abs(got[r["id"]] - a) for a in allowed) < 1e-6
    # the same seed, the same labels
    assert got == lm.step_accuracy(None, None, tok, cfg.data.get("template", "zero"), records, seed=11)


def test_learned_rewards_in_spread_units_pool_reward_models_of_different_scales():
    """Two seeds whose reward models score on scales 10× apart move their policies by the same
    number of SDs: in spread units the seeds agree (SE 0), in raw scores they do not."""
    base = [{"a": 0.0, "b": 1.0}, {"a": 0.0, "b": 10.0}]
    after = [{"a": 0.5, "b": 1.5}, {"a": 5.0, "b": 15.0}]
    spread = [1.0, 10.0]
    raw = learning_run.paired_row("r", base, after, unit="raw")
    units = learning_run.paired_row(
        "r",
        [lm.in_spread_units(b, s) for b, s in zip(base, spread)],
        [lm.in_spread_units(a, s) for a, s in zip(after, spread)],
        unit="raw",
    )
    assert units["diff"] == pytest.approx(0.5) and units["se"] == pytest.approx(0.0, abs=1e-12)
    assert raw["diff"] == pytest.approx(2.75) and raw["se"] > 1.0
    with pytest.raises(ValueError, match="spread must be > 0"):
        lm.in_spread_units({"a": 1.0}, 0.0)


def test_paired_rows_against_a_hand_computation():
    base = {"a": 0.5, "b": 0.25, "c": 1.0}
    arms = [{"a": 1.0, "b": 0.5, "c": 1.0}, {"a": 0.75, "b": 0.5, "c": 1.0}]
    row = learning_run.paired_row("m", base, arms)
    want = np.mean([np.mean([a[i] for a in arms]) - base[i] for i in base])
    assert row["diff"] == pytest.approx(want) and row["base"] == pytest.approx(np.mean(list(base.values())))
    assert row["seeds"] == 2 and row["n"] == 3 and row["se"] > 0 and row["direction"] == 1
    # each seed paired with its own base (its own reward model / initial head): mean of the differences
    bases_ = [{"a": 0.0, "b": 0.0}, {"a": 1.0, "b": 1.0}]
    arms_ = [{"a": 0.5, "b": 0.5}, {"a": 2.0, "b": 2.0}]
    row = learning_run.paired_row("m", bases_, arms_, unit="raw")
    assert row["diff"] == pytest.approx(0.75) and row["base"] == pytest.approx(0.5) and row["after"] == 1.25
    # a guard that did not move is kept; one that fell by more than 2 SE is not; lower-is-better metrics
    flat = learning_run.paired_row("g", base, [base, base], direction=0)
    assert flat["shown"] and flat["diff"] == 0
    fell = learning_run.paired_row(
        "g", {str(i): 1.0 for i in range(20)}, [{str(i): 0.0 for i in range(20)}], direction=0
    )
    assert not fell["shown"]
    lower = learning_run.paired_row(
        "kl", {str(i): 1.0 + i % 3 for i in range(20)}, [{str(i): 0.5 + i % 3 for i in range(20)}], direction=-1
    )
    assert lower["diff"] == pytest.approx(-0.5) and lower["shown"]


def test_the_report_says_what_ran_failed_or_did_not(tmp_path):
    row = dict(metric="m", unit="pct", base=0.6, after=0.7, diff=0.1, se=0.02, n=64, seeds=3, direction=1, shown=True)
    guard = dict(row, metric="solved", diff=-0.1, direction=0, shown=False)
    results = {
        "checks": {
            "grpo": dict(
                key="grpo",
                label="GRPO",
                metric="accuracy",
                rows=[row, guard],
                wall_s=90.0,
                seeds=[0, 1, 2],
                budget=dict(steps=30, questions_per_step=8, n=8, learning_rate=4e-5, tiers=[]),
                note="",
            ),
            "dpo": dict(key="dpo", label="DPO", metric="preference", error="ValueError: boom", seeds=[0]),
        }
    }
    doc = tmp_path / "learning.md"
    doc.write_text(
        "# Learning checks\n\nintro kept\n\n"
        + learning_report.BEGIN
        + "\nold\n"
        + learning_report.END
        + "\n\noutro kept\n"
    )
    learning_report.write_report(results, str(tmp_path / "LEARNING.md"), doc=str(doc))
    text = doc.read_text()
    assert "intro kept" in text and "outro kept" in text and "\nold\n" not in text
    assert "| GRPO | m | 60.0 % | 70.0 % | +10.0 ± 2.0 | **yes** | 3 | 1.5 min |" in text
    assert "**dropped > 2 SE**" in text and "**failed**: ValueError: boom" in text
    assert "| PPO (critic, GAE) | — | | | | not run | | |" in text and "Commit `" in text


# ----------------------------------------------------------------------------- smokes (a tiny random base)
@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("learning"))


def _smoke(smoke_dir, key):
    r = learning_run.run_check(
        learning.checks(key)[0], smoke_dir, seeds=(0,), scale=learning.SMOKE, base=bench.smoke_base(smoke_dir)
    )
    assert r["key"] == key and r["rows"] and r["seconds"].keys() == {"0"}
    for row in r["rows"]:
        assert np.isfinite(row["diff"]) and np.isfinite(row["base"]) and row["seeds"] == 1, row
    return r


# one check per kind of metric in the default suite (the rest under slow: every smoke compiles its own
# trainer and sampler, 10–40 s each on 2 cores)
FAST_SMOKES = ("sft", "dpo", "distill_fkl", "prm", "ppo")


@pytest.mark.parametrize("key", FAST_SMOKES)
def test_smoke(smoke_dir, key):
    r = _smoke(smoke_dir, key)
    if key == "sft":  # a rerun finds the run finished and reports the time it took when it ran
        again = _smoke(smoke_dir, key)
        assert again["seconds"] == r["seconds"] and r["seconds"]["0"] > 0
        assert again["wall_s"] >= again["seconds"]["0"]
    if key == "dpo":  # at the reference every pair ties: ½; the pairs are counted
        assert r["rows"][0]["base"] == 0.5 and r["data"]["train"]["questions"] == learning.SMOKE.pair_questions
        pairs = [json.loads(x) for x in open(os.path.join(smoke_dir, "pairs", "pairs.jsonl"))]
        assert pairs and all(p["chosen"] != p["rejected"] for p in pairs)
    if key == "distill_fkl":  # the student starts away from its teacher
        assert r["rows"][0]["unit"] == "nats" and r["rows"][0]["base"] > 0
    if key == "ppo":  # the critic, reloaded from checkpoints_critic, against held-out returns
        for where, (err, ev) in zip(("RL tier", "training mix"), (r["rows"][-4:-2], r["rows"][-2:])):
            assert "squared error" in err["metric"] and where in err["metric"] and err["direction"] == -1
            assert err["base"] >= 0 and err["after"] >= 0
            assert (
                "explained variance" in ev["metric"] and where in ev["metric"] and ev["base"] == 0 and ev["after"] <= 1
            )
        # the mix: the RL tier half of the questions, each solved tier a quarter (rounded up)
        n = learning.SMOKE.n_eval
        assert r["rows"][-1]["n"] == -(-n * 2 // 4) + 2 * -(-n // 4) and r["rows"][-3]["n"] == n
        run = os.path.join(smoke_dir, "ppo", "seed0")
        graphdef, params, step = load_critic(run)
        assert step == learning.SMOKE.steps
        values = nnx.merge(graphdef, params)(jnp.ones((2, 5), jnp.int32), jnp.ones((2, 5), jnp.int32))
        assert values.shape == (2, 5) and bool(jnp.all(jnp.isfinite(values)))


@pytest.mark.slow
@pytest.mark.parametrize("key", [k for k in KEYS if k not in FAST_SMOKES])
def test_smoke_slow(smoke_dir, key):
    if key == "star":  # a random base solves nothing, not even with the answer as a hint: a clear error
        with pytest.raises(FileNotFoundError, match="kept nothing"):
            _smoke(smoke_dir, key)
        done = json.loads(open(os.path.join(smoke_dir, "star", "seed0", "round_1", "DONE.json")).read())
        assert done["kept"] == 0 and done["questions"] == learning.SMOKE.star_questions
        return
    r = _smoke(smoke_dir, key)
    if key == "rlhf_ppo":
        assert os.path.isdir(os.path.join(smoke_dir, "reward_model", "seed0", "checkpoints"))


def test_the_command_writes_the_table(smoke_dir, tmp_path):
    doc = tmp_path / "learning.md"  # the smoke's SFT run is finished: the command only measures and writes
    bench.main([smoke_dir, "--smoke", "--only", "sft", "--seeds", "1", "--doc", str(doc)])
    results = json.loads(open(os.path.join(smoke_dir, "results.json")).read())
    assert list(results["checks"]) == ["sft"] and "| SFT |" in doc.read_text()


# ----------------------------------------------------------------------------- the checks (shipped base)
# the session-12 run of every check (docs/learning.md) did not show these regimes' first metric; why
# is written there
NOT_SHOWN: dict[str, str] = {}  # check -> why its effect is not shown (an expected failure)


@pytest.mark.slow
@pytest.mark.parametrize(
    "key",
    [
        pytest.param(k, marks=pytest.mark.xfail(reason=NOT_SHOWN[k], strict=False)) if k in NOT_SHOWN else k
        for k in KEYS
    ],
)
def test_learning_check(tmp_path_factory, key):
    """The regime moves its metric beyond 2 SE in the intended direction (3 seeds), and no solved
    tier drops by more than 2 SE."""
    r = learning_run.run_check(learning.checks(key)[0], str(tmp_path_factory.mktemp("learning_full")), seeds=(0, 1, 2))
    assert r["rows"][0]["shown"], r["rows"][0]
    assert all(row["shown"] for row in r["rows"] if row["direction"] == 0), r["rows"]
    if key == "prm":  # also beyond the rule that calls every step right
        assert r["rows"][1]["shown"], r["rows"][1]


def test_a_stop_request_ends_the_study_and_a_failure_does_not(tmp_path, monkeypatch):
    """A failing check is recorded and the study goes on; a preempted one (SIGTERM: the trainer saved
    its step and raised Preempted) ends the study instead of starting the next check."""
    from upt_jax.train.preemption import Preempted

    ran = []

    def fake(check, run_dir, **kw):
        ran.append(check.key)
        if check.key == "sft":
            raise ValueError("boom")
        if check.key == "dpo":
            raise Preempted("stopped", signal_name="SIGTERM", step=1)
        return dict(
            key=check.key,
            label=check.label,
            metric=check.metric,
            rows=[],
            wall_s=0.0,
            seeds=[0],
            budget=dict(steps=1, questions_per_step=1, n=1, learning_rate=1.0),
            note="",
        )

    monkeypatch.setattr(learning_run, "run_check", fake)
    with pytest.raises(Preempted):
        learning_run.run_study(str(tmp_path), only="sft,grpo,dpo,prm", seeds=(0,))
    assert ran == ["sft", "grpo", "dpo"]
    results = json.loads((tmp_path / "results.json").read_text())["checks"]
    assert results["sft"]["error"] == "ValueError: boom" and "rows" in results["grpo"] and "dpo" not in results


def test_the_temperature_ablation_trains_grpo_at_the_sampling_temperature_and_at_one():
    """`benchmarks/temperature_ablation.py`: both arms are the GRPO check sampling at 0.7; the fix
    trains π_θ at 0.7, the 'before' arm at 1 with its behaviour log-probs recomputed at 1."""
    from benchmarks import temperature_ablation
    from upt_jax.train import run_spec

    arms = temperature_ablation.arms(0.7)
    for name, check in arms.items():
        assert "." not in check.key and check.steps == learning.checks("grpo")[0].steps
        c = learning.study_config(check, "/tmp/t_ablation", base=learning_run.shipped_base(), seeds=(0,))
        _, tc = cmp.arm_config(c, check.key, 0)
        schema.validate(tc)
        assert tc.rollout.temperature == 0.7
        assert run_spec.rollout_temperature(tc) == (0.7 if name == "fix" else 1.0)
        assert run_spec.behaviour_recomputed(tc) == (name == "before")
