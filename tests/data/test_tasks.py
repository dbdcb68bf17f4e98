"""Task families (upt_jax.data.tasks): the built-in arith family is the historical synthetic task,
the index-hinted family's lookups are unique and its demonstrations verify, and a family defined
in a module outside upt_jax runs through pre-training, GRPO and evaluation by its tier names."""

import random
import re

import pytest

from upt_jax.data import hinted, synthetic, tasks
from upt_jax.rewards import Verifier


def test_arith_family_is_the_historical_task_and_corpus():
    fam = tasks.get_task("arith")
    assert fam.tier_names == tuple(synthetic.TIERS)
    for tier in ("add_3", "mul_2x2", "sub_3"):
        old, new = synthetic.generate(tier, 3, seed=5), fam.generate(tier, 3, seed=5)
        assert [dict(r, task="arith") for r in old] == new
    assert fam.corpus(20, seed=3, tiers=synthetic.EASY_TIERS) == synthetic.pretraining_corpus(20, seed=3)
    src = tasks.TierSource(("add_2", "mul_2x1"), 4, seed=1)
    legacy = synthetic.SyntheticSource(("add_2", "mul_2x1"), 4, seed=1)
    assert [src[i]["question"] for i in range(len(src))] == [legacy[i]["question"] for i in range(len(legacy))]


@pytest.mark.parametrize("tier", tuple(hinted.HINT_TIERS))
def test_hinted_lookups_are_unique_and_demonstrations_verify(tier):
    recs = tasks.generate(tier, 40, seed=0)
    with Verifier("integer") as v:
        assert list(v.scores([r["demonstration"] for r in recs], [r["answer"] for r in recs])) == [1.0] * 40
    for r in recs:
        q = r["question"].removeprefix("What is ").removesuffix("?")
        labelled = dict(re.findall(r"([A-Z])(\d)", q))
        assert len(labelled) == len(re.findall(r"[A-Z]", q))  # every label once in the question
        assert not set(labelled) & set("QALW")  # never a capital of the prompt templates' words
        # every labelled digit a step reads is the question's digit under that label
        for label, digit in re.findall(r"([A-Z])(\d)", r["demonstration"]):
            assert labelled[label] == digit, (r["question"], label)
        a, b = r["operands"]
        assert int(r["answer"]) == {"add": a + b, "sub": a - b, "mul": a * b}[hinted.HINT_TIERS[tier][0]]


def test_hinted_example_and_levels():
    assert hinted.hinted(47, 0) == "C4B7" and hinted.hinted(56, 1) == "N5M6"
    fam = tasks.get_task("arith_hint")
    assert fam.tiers_at("base") == ("hadd_2", "hadd_3") and fam.tiers_at("sft") == ("hsub_3",)
    doc = fam.corpus(50, seed=0)
    assert any("\\boxed{" in d for d in doc) and all("What is" in d or "=" in d for d in doc)


def test_registry_refuses_clashes_and_names_known_tiers():
    with pytest.raises(ValueError, match="already belongs to task 'arith'"):
        tasks.register_task(tasks.TaskFamily("clash", (tasks.TaskTier("add_2", "base"),), make_record=None))
    with pytest.raises(KeyError, match="unknown tier 'nope'.*hadd_3"):
        tasks.resolve_tier("nope")
    with pytest.raises(KeyError, match="cannot import task module"):
        tasks.resolve_tier("no_such_module_xyz:count_3")
    with pytest.raises(ValueError, match="level"):
        tasks.TaskTier("t", "impossible")


def test_the_built_in_families_are_registered_whichever_module_a_process_imports_first():
    """The families register themselves in `task_registry` (they import it, not `tasks`: no import
    cycle); `tasks` re-exports that registry, and a new process that imports the registry or a family
    module first still sees every built-in family (the package imports them)."""
    import subprocess
    import sys

    from upt_jax.data import task_registry

    assert (tasks.TaskFamily, tasks.TaskTier, tasks.register_task, tasks.get_task) == (
        task_registry.TaskFamily,
        task_registry.TaskTier,
        task_registry.register_task,
        task_registry.get_task,
    )
    assert tasks.task_names()[:3] == ("arith", "arith_hint", "countdown")
    for first in ("upt_jax.data.task_registry", "upt_jax.data.hinted", "upt_jax.data.countdown", "upt_jax.data.tasks"):
        code = f"import {first}; from upt_jax.data import task_registry as r; print(r.task_names())"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "('arith', 'arith_hint', 'countdown')", (first, out)


def test_a_user_family_runs_through_pretraining_grpo_and_evaluation(tmp_path):
    """The Done-when of the testbed issue: a family defined in tests/data/user_task.py (outside
    upt_jax) is named by ``module:tier`` in the configs alone."""
    from flax import nnx

    from experiments import grpo, pretrain_tiny
    from upt_jax.eval.evaluate import evaluate, synthetic_suites
    from upt_jax.eval.inputs import parse_tiers
    from upt_jax.train.run_model import load_run_model
    from upt_jax.train.trainer import train

    tier = "tests.data.user_task:count_3"
    small = dict(num_layers=1, hidden_size=32, intermediate_size=64, num_heads=2, num_kv_heads=1, head_dim=16)
    pre = pretrain_tiny.get_config()
    pre.run_dir, pre.model.overrides = str(tmp_path / "pre"), dict(small)
    pre.data.corpus.tiers, pre.data.corpus.n_docs = (tier,), 64
    pre.train.steps, pre.train.questions_per_step, pre.log.progress = 3, 8, False
    pre.mesh.data, pre.mesh.fsdp, pre.mesh.tensor = -1, 1, 1
    train(pre)
    rl = grpo.get_config()
    rl.run_dir = str(tmp_path / "grpo")
    rl.model.init, rl.model.checkpoint, rl.model.overrides = "checkpoint", str(tmp_path / "pre"), dict(small)
    rl.data.tiers, rl.data.n_per_tier = (tier, "tests.data.user_task:count_6"), 16
    rl.train.steps, rl.train.questions_per_step, rl.rollout.n, rl.rollout.max_new_tokens = 2, 2, 4, 8
    rl.mesh.data, rl.mesh.fsdp, rl.mesh.tensor = 8, 1, 1
    rl.log.progress = False
    metrics = train(rl)
    assert [m["step"] for m in metrics] == [1, 2] and all("reward/mean" in m for m in metrics)
    assert parse_tiers(["count"]) == ("count_3", "count_6") and parse_tiers(["count/sft"]) == ("count_6",)
    model, tok, _, _ = load_run_model(tmp_path / "grpo")
    suites = synthetic_suites((tier,), n=4)
    assert suites["count_3"][0]["task"] == "count"
    results = evaluate(model, tok, suites, k=2, max_new_tokens=16, default_verifier="integer")
    assert results["count_3"].num_questions == 4


def test_hinted_corpus_slips_only_its_rl_tier_at_the_recorded_rate_and_each_slip_is_consistent():
    import re

    from upt_jax.data import hinted

    assert hinted.CORPUS_SLIPS == {"hmul_2x1": 0.4}
    docs = hinted.ARITH_HINT.corpus(3000, 0, tiers=hinted.CORPUS_TIERS)
    wrong = {"+": [], "*": []}
    for d in docs:
        m = re.search(r"What is ([A-Z0-9]+)([+*])([A-Z0-9]+)\?", d)
        if m is None or "boxed" not in d:
            continue
        a, b = (int(re.sub("[A-Z]", "", x)) for x in (m.group(1), m.group(3)))
        boxed = int(re.search(r"\\boxed\{(\d+)\}", d).group(1))
        wrong[m.group(2)].append(boxed != (a * b if m.group(2) == "*" else a + b))
        # every demonstration, slipped or not, is consistent: the boxed answer is the last "so far"
        assert boxed == int(re.findall(r"so far (\d+)", d)[-1])
    assert not any(wrong["+"])  # addition never slips
    rate = sum(wrong["*"]) / len(wrong["*"])
    assert len(wrong["*"]) > 500 and abs(rate - 0.4) < 0.05, rate
    # a slip writes one column's product 1 off (later columns follow from its carry)
    item = hinted.make_hinted_question("hmul_2x1", 0, 7)
    good, bad = item["demonstration"].splitlines(), hinted.slipped(item, random.Random(3))["demonstration"].splitlines()
    products = [
        (int(re.search(r"=(\d+),", g).group(1)), int(re.search(r"=(\d+),", s).group(1)))
        for g, s in zip(good, bad)
        if "*" in g
    ]
    first = next(i for i, (x, y) in enumerate(products) if x != y)
    assert abs(products[first][0] - products[first][1]) == 1


def test_a_repeated_tier_is_weighted_with_distinct_questions():
    """A replay mix names a tier twice: it is drawn twice as often, never the same item twice."""
    src = tasks.TierSource(("hmul_2x1", "hadd_2", "hmul_2x1"), 50, seed=3)
    recs = [src[i] for i in range(len(src))]
    by_tier = {t: [r["id"] for r in recs if r["tier"] == t] for t in ("hmul_2x1", "hadd_2")}
    assert len(by_tier["hmul_2x1"]) == 100 and len(by_tier["hadd_2"]) == 50
    assert len(set(by_tier["hmul_2x1"])) == 100  # distinct items, 0..99 of the tier
    assert sorted(by_tier["hmul_2x1"]) == sorted(r["id"] for r in tasks.generate("hmul_2x1", 100, seed=3))
    once = tasks.TierSource(("hmul_2x1", "hadd_2"), 50, seed=3)  # a tier named once: item i // k
    assert [once[i]["id"] for i in range(4)] == ["hmul_2x1/3/0", "hadd_2/3/0", "hmul_2x1/3/1", "hadd_2/3/1"]
