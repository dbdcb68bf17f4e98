"""Parts registered without editing the library, their `Needs`, `requirements`, recipes as data."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import upt_jax.upge as upge
from tests.upge.batches import random_batch

REGISTRIES = {
    "stabiliser": upge.STABILISERS,
    "reference": upge.REFERENCES,
    "advantage": upge.ADVANTAGES,
    "gate": upge.GATE_PARTS,
}


def _rl(advantage="reinforce", stabiliser=("none",), reference="current", gate=None, aggregation="token-mean"):
    return upge.Parts(
        stabiliser=tuple(upge.part(s) for s in stabiliser),
        reference=upge.part(reference),
        advantage=upge.part(advantage),
        aggregation=upge.part(aggregation),
        gate=None if gate is None else upge.part(gate),
    )


def _one_term(name, parts, **kw):
    return upge.Recipe(name, (upge.Term("pg", rollout=parts, **kw),))


def _sums(recipe, logp, batch, g=4):
    sums, dens, _ = upge.compute_loss(recipe, logp, batch, group_size=g)
    return float(sums["pg"]), float(dens["pg"])


def _scaled_reinforce(c, scale=2.0):
    return scale * c.rewards


def _half_weight(c):
    return 0.5 * jnp.ones_like(c.mask), jnp.zeros_like(c.mask)


def _copy_of_behaviour(c):
    return c.get("old_logp")


def _first_row_only(c):
    return (jnp.arange(c.mask.shape[0]) == 0).astype(jnp.float32)


upge.register_advantage("test_scaled_reinforce", _scaled_reinforce, needs=upge.Needs(("rewards",)))
upge.register_stabiliser("test_half", _half_weight)
upge.register_reference("test_behaviour_copy", _copy_of_behaviour, needs=upge.Needs(("old_logp",)))
upge.register_gate("test_first_row", _first_row_only)


def test_registered_parts_enter_the_loss():
    logp, b = random_batch(0, b=8, t=6, group_size=4)
    base_s, base_d = _sums(_one_term("r", _rl()), logp, b)
    assert base_s != 0.0
    # an advantage: 2·r doubles the sum, same denominator
    s, d = _sums(_one_term("r2", _rl(advantage="test_scaled_reinforce")), logp, b)
    np.testing.assert_allclose((s, d), (2 * base_s, base_d), rtol=1e-6)
    # a stabiliser weight of 0.5 halves it
    s, d = _sums(_one_term("rh", _rl(stabiliser=("test_half",))), logp, b)
    np.testing.assert_allclose((s, d), (0.5 * base_s, base_d), rtol=1e-6)
    # a reference equal to `behaviour` gives behaviour's loss and gradient
    ppo = _rl(advantage="grpo", stabiliser=("ppo_clip",), reference="behaviour")
    mine = _rl(advantage="grpo", stabiliser=("ppo_clip",), reference="test_behaviour_copy")
    grad = lambda p: jax.grad(
        lambda lp: upge.normalise(*upge.compute_loss(_one_term("x", p), lp, b, group_size=4)[:2])
    )(logp)
    np.testing.assert_array_equal(grad(mine), grad(ppo))
    # a gate keeping row 0 only: the denominator is row 0's tokens
    _, d = _sums(_one_term("rg", _rl(gate="test_first_row")), logp, b)
    assert d == float(b["mask"][0].sum())


def test_a_registered_name_is_taken_unless_overwritten():
    with pytest.raises(ValueError, match=r"advantage 'grpo' is already registered.*overwrite=True"):
        upge.register_advantage("grpo", _scaled_reinforce)
    with pytest.raises(
        ValueError,
        match=r"'test_scaled_reinforce' is already registered \(from "
        r"tests\.upge\.test_registry:_scaled_reinforce\)",
    ):
        upge.register_advantage("test_scaled_reinforce", _scaled_reinforce)
    upge.register_advantage("test_scaled_reinforce", _scaled_reinforce, needs=upge.Needs(("rewards",)), overwrite=True)
    with pytest.raises(TypeError, match="not callable"):
        upge.register_gate("test_not_callable", 3)


def test_every_registered_part_declares_its_needs():
    """A part added to a registry dict without a `Needs` declaration fails here (and in `requirements`)."""
    for kind, registry in REGISTRIES.items():
        for name in registry:
            assert name in upge.NEEDS[kind], f"{kind} {name!r} declares no needs"
    upge.ADVANTAGES["test_undeclared"] = upge.ADVANTAGES["one"]
    try:
        with pytest.raises(KeyError, match=r"advantage 'test_undeclared' declares no needs"):
            upge.requirements(_one_term("u", _rl(advantage="test_undeclared")))
    finally:
        del upge.ADVANTAGES["test_undeclared"]


def _old_rules(recipe):
    """What the trainer read from part names before `requirements` (the names it matched, with the
    2025–26 parts the losses branch added to those lists: kto's reference, opd's teacher, and the
    group advantages gpg, clip_cov, kl_cov and opd)."""
    adv = [(t, r, p) for t in recipe.terms for r, p in t.roles()]
    names = {p.advantage.name for _, _, p in adv}
    return dict(
        reference=any(t.kl is not None for t in recipe.terms) or bool(names & {"dpo", "ipo", "kto"}),
        critic=next(
            (
                (
                    p.advantage.kw.get("gamma", 1.0),
                    p.advantage.kw.get("lam", 0.95),
                    t.kl if t.kl is not None and t.kl.where == "reward" else None,
                )
                for t, _, p in adv
                if p.advantage.name == "gae"
            ),
            None,
        ),
        teacher_logits="teacher_probs" in names,
        teacher_logp=bool(names & {"teacher_log_ratio", "opd"}),
        demos=any(t.demo is not None for t in recipe.terms),
        groups=sorted(
            (t.name, p.advantage.name)
            for t, r, p in adv
            if r == "rollout"
            and p.advantage.name
            in ("grpo", "dr_grpo", "rloo", "reinforce_pp_baseline", "gpg", "clip_cov", "kl_cov", "opd")
        ),
    )


RECIPES = upge.all_recipes() + [
    upge.get_recipe("grpo", kl_coef=0.04),
    upge.get_recipe("ppo", kl_coef=0.1),
    upge.get_recipe("dapo", dynamic_sampling=True),
    upge.get_recipe("hpt", offline="both", gate="soft", gamma=0.3),
    upge.get_recipe("distill_fkl", top_k=4),
]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.name)
def test_requirements_agree_with_the_name_rules_they_replace(recipe):
    req, old = upge.requirements(recipe), _old_rules(recipe)
    assert req.reference == old["reference"]
    critic = (
        None
        if req.critic is None
        else (req.critic.part.kw.get("gamma", 1.0), req.critic.part.kw.get("lam", 0.95), req.critic.kl)
    )
    assert critic == old["critic"]
    assert (req.teacher_logits, req.teacher_logp, req.demos) == (
        old["teacher_logits"],
        old["teacher_logp"],
        old["demos"],
    )
    assert (
        sorted(
            (g.term, g.part.name)
            for g in req.groups
            if g.role == "rollout" and g.kind == "advantage" and g.min_rows >= 2
        )
        == old["groups"]
    )
    # the batch keys are those the loss reads: compute_loss runs on a batch of exactly them
    logp, full = random_batch(1, b=8, t=5, group_size=4, demo_last=req.demos)
    if not req.vocab_part and not req.pairs and req.batch <= set(full):
        batch = {k: v for k, v in full.items() if k in req.batch | {"mask"}}
        if "entropy" in full and req.entropy:
            batch["entropy"] = full["entropy"]
        upge.compute_loss(recipe, logp, batch, group_size=4)


def test_hpt_requirements_groups_and_threshold():
    req = upge.requirements(upge.get_recipe("luffy"))
    (rollout,) = [g for g in req.groups if g.role == "rollout"]
    assert rollout.with_demo  # LUFFY normalises over the rollouts and the demonstration
    req = upge.requirements(upge.get_recipe("hpt", gamma=0.25))
    assert not [g for g in req.groups if g.kind == "advantage" and g.with_demo]  # HPT: over the rollouts
    assert {gamma for _, gamma in req.thresholds} == {0.25}
    assert not upge.requirements(upge.get_recipe("hpt", gate="linear")).thresholds


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.name)
def test_recipes_round_trip_through_json(recipe):
    data = json.loads(json.dumps(upge.recipe_to_dict(recipe)))
    back = upge.recipe_from_dict(data)
    assert back == recipe and hash(back) == hash(recipe)


def test_a_user_part_is_recorded_with_its_import_path():
    recipe = _one_term("mine", _rl(advantage="test_scaled_reinforce"))
    data = upge.recipe_to_dict(recipe)
    adv = data["terms"][0]["rollout"]["advantage"]
    assert adv["import"] == "tests.upge.test_registry:_scaled_reinforce"
    assert "import" not in data["terms"][0]["rollout"]["reference"]  # a library part
    assert upge.recipe_from_dict(data) == recipe
    # recorded from another module than the one registered now: an error, not another recipe
    adv["import"] = "somewhere_else:fn"
    with pytest.raises(
        ValueError,
        match=r"registered from tests\.upge\.test_registry:_scaled_reinforce, but the "
        r"recipe was recorded with the one from somewhere_else:fn",
    ):
        upge.recipe_from_dict(data)


def test_unrebuildable_records_fail_clearly():
    data = upge.recipe_to_dict(_one_term("mine", _rl(advantage="test_scaled_reinforce")))
    adv = data["terms"][0]["rollout"]["advantage"]
    adv["name"] = "test_not_registered"
    adv["import"] = "tests.upge.batches:f"
    with pytest.raises(ValueError, match=r"importing 'tests\.upge\.batches' did not register it"):
        upge.recipe_from_dict(data)
    adv["import"] = "__main__:f"
    with pytest.raises(ValueError, match="registered in __main__"):
        upge.recipe_from_dict(data)
    adv["import"] = "no_such_module_xyz:f"
    with pytest.raises(ValueError, match="cannot be imported"):
        upge.recipe_from_dict(data)
    del adv["import"]
    with pytest.raises(ValueError, match="unknown advantage 'test_not_registered'"):
        upge.recipe_from_dict(data)
    with pytest.raises(ValueError, match="not a recorded recipe"):
        upge.recipe_from_dict({"name": "x"})
    bad = upge.Recipe("bad", (upge.Term("pg", rollout=upge.Parts(advantage=upge.Part("one", (("value", 1j),)))),))
    with pytest.raises(ValueError, match="not plain data"):
        upge.recipe_to_dict(bad)


def test_the_recipe_table_lists_library_parts_only():
    table = upge.recipe_table()
    assert "`grpo`" in table and "test_scaled_reinforce" not in table and "test_half" not in table
