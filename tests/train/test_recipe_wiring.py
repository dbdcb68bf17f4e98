"""What the trainer provides for issue #24's recipes: a teacher for opd_pg, a reference model for
KTO, and a clear error for group advantages over groups of one rollout."""

import pytest

from upt_jax import upge
from upt_jax.train.step import teacher_inputs
from upt_jax.train.checks import check_recipe


def needs_reference(recipe) -> bool:
    return upge.requirements(recipe).reference


def test_opd_pg_gets_the_teachers_logprobs_and_kto_a_reference():
    assert teacher_inputs(upge.get_recipe("opd_pg")).logp
    assert not teacher_inputs(upge.get_recipe("sapo")).any
    assert needs_reference(upge.get_recipe("kto")) and not needs_reference(upge.get_recipe("gpg"))


def test_clip_cov_gets_the_trainers_random_draw_and_kto_its_unpaired_rows():
    from upt_jax.train.kto import uses_kto

    # the trainer draws clip_cov_uniforms from its step key when the recipe's needs name them
    assert "clip_cov_uniforms" in upge.requirements(upge.get_recipe("clip_cov")).batch
    assert "clip_cov_uniforms" not in upge.requirements(upge.get_recipe("kl_cov")).batch
    assert uses_kto(upge.get_recipe("kto")) and not uses_kto(upge.get_recipe("dpo"))


@pytest.mark.parametrize("name", ["gpg", "clip_cov", "kl_cov", "opd_pg", "sapo", "gmpo", "rloo"])
def test_group_advantages_refuse_groups_of_one(name):
    from experiments import grpo

    c = grpo.get_config()
    c.recipe.name, c.rollout.n = name, 1
    with pytest.raises(ValueError, match=r"config\.rollout\.n=1"):
        check_recipe(c)
