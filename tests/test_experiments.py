"""Every experiment module runs: the ones without a test of their own train two steps here, and
a new module without a test fails the completeness check."""

import importlib
import json
import os
import pathlib
import re

import pytest

from tests.train.test_trainer import shrink
from upt_jax.train.trainer import train

ROOT = pathlib.Path(__file__).resolve().parents[1]

# module (or module:arg) → the test that runs it for a few steps
COVERED_ELSEWHERE = {
    "sft": "tests/train/test_trainer.py::test_stage_handoff_loads_previous_params",
    "grpo": "tests/train/test_trainer.py::test_stop_and_resume_is_bitwise_identical",
    "grpo:dapo": "tests/train/test_trainer.py::test_dapo_dynamic_sampling_keeps_only_groups_with_signal",
    "hpt": "tests/train/test_trainer.py::test_hpt_routes_unsolved_questions_to_sft",
    "sft_then_grpo": "tests/train/test_trainer.py::test_sft_then_grpo_pipeline_runs_and_rerun_only_reports",
    "ppo": "tests/train/test_trainer.py::test_ppo_trains_policy_and_critic",
    "dpo": "tests/train/test_trainer.py::test_dpo_raises_the_chosen_margin",
    "rft": "tests/train/test_trainer.py::test_rft_trains_only_on_verified_rollouts",
    "pretrain_tiny": "tests/train/test_pretrain.py::test_corpus_pretraining_lowers_nll_and_later_stages_adopt_its_shape",
    "pretrain_hint": "tests/studies/test_base_model.py::test_pretrain_until_cools_down_after_phase_one_and_resumes",
    "pretrain_countdown": "tests/data/test_countdown.py::test_countdown_runs_through_pretraining_grpo_and_evaluation",
    "reward_model": "tests/train/test_reward_model.py::test_reward_model_learns_synthetic_pairs",
    "rlhf_ppo": "tests/train/test_reward_model.py::test_rlhf_ppo_scores_rollouts_with_the_learned_reward",
    "prm": "tests/train/test_reward_model.py::test_prm_learns_step_labels",
    "star": "tests/train/test_star.py::test_star_rounds_rationalise_and_resume",
    "distill": "tests/train/test_distill.py::test_forward_kl_decreases_towards_the_teacher",
    "distill:on_policy": "tests/train/test_distill.py::test_on_policy_reverse_kl",
    "paper_table": "tests/studies/test_comparison.py::test_comparison_runs_evaluates_and_reports",
    "testbed": "tests/studies/test_testbed.py::test_summary_holds_each_arms_paired_difference_as_computed_by_hand",
    "hpt_paper": "tests/test_hpt_paper.py::test_hpt_paper_tiny_trains_on_a_local_hf_model_and_a_luffy_parquet",
    "testbed_sweep": "tests/studies/test_testbed.py::test_the_sweep_scores_each_rate_on_the_validation_split",
}
RUN_HERE = [
    "luffy",
    "srft",
    "hpt:released_code",
    "grpo:dr_grpo",
    "grpo:gspo",
    "grpo:cispo",
    "grpo:rloo",
    "grpo:reinforce_pp",
]


def _load(spec):
    name, _, arg = spec.partition(":")
    return importlib.import_module(f"experiments.{name}").get_config(arg or None)


def test_every_module_has_a_test():
    modules = {p.stem for p in (ROOT / "experiments").glob("*.py") if p.stem != "__init__"}
    covered = {s.partition(":")[0] for s in list(COVERED_ELSEWHERE) + RUN_HERE}
    assert modules <= covered, f"experiment modules without a test: {sorted(modules - covered)}"
    for spec, test in COVERED_ELSEWHERE.items():
        path, _, name = test.partition("::")
        assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.M), f"{spec}: {test} is gone"
    from experiments import grpo

    assert {f"grpo:{v}" for v in grpo.VARIANTS if v != "grpo"} <= set(RUN_HERE) | set(COVERED_ELSEWHERE)


@pytest.mark.parametrize("spec", RUN_HERE)
def test_module_trains_two_steps(spec, tmp_path):
    c = shrink(_load(spec), tmp_path / "run", steps=2)
    if c.recipe.name in ("luffy", "srft", "hpt"):  # groups of n rollouts + 1 demonstration
        c.rollout.n = 3  # 2 questions × 4 rows split over the mesh's data axis
    history = train(c)
    assert [m["step"] for m in history] == [1, 2]
    assert all(m["skipped"] == 0.0 for m in history)
    with open(os.path.join(c.run_dir, "config.json")) as f:
        assert json.load(f)["recipe"]["name"] == c.recipe.name
    assert sorted(os.listdir(os.path.join(c.run_dir, "checkpoints")))[-1] == "2"
