"""docs/recipes.md is generated from the code and must not be stale."""

import pathlib

import upt_jax.upge as upge

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "recipes.md"

REQUIRED = [
    "sft",
    "reinforce",
    "ppo",
    "grpo",
    "dr_grpo",
    "dapo",
    "gspo",
    "cispo",
    "rloo",
    "reinforce_pp",
    "remax",
    "dpo",
    "ipo",
    "simpo",
    "orpo",
    "distill_fkl",
    "distill_on_policy",
    "luffy",
    "srft",
    "rft",
    "grpo_process",  # issue 3's list + issue 11's
    "kto",
    "sapo",
    "gmpo",
    "gpg",
    "clip_cov",
    "kl_cov",
    "dppo_tv",
    "dppo_kl",
    "opd_pg",  # issue 24
    "rloo_ppo",
    "ipo_length_avg",  # issue 24: the earlier forms as variants
    "hpt",
]


def test_recipe_table_is_up_to_date():
    assert DOC.exists(), "run python tools/gen_recipe_table.py"
    assert DOC.read_text() == upge.recipe_table(), "docs/recipes.md is stale: run python tools/gen_recipe_table.py"


def test_every_recipe_is_in_the_table():
    assert sorted(upge.RECIPES) == sorted(REQUIRED)
    table = upge.recipe_table()
    names = {line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")}
    for name in REQUIRED[:-1] + ["hpt", "hpt_released_code"]:
        assert name in names, name


def test_recipes_are_data():
    # frozen, hashable (usable as static jit arguments), equal when built equal
    r1, r2 = upge.get_recipe("dapo", eps_high=0.3), upge.get_recipe("dapo", eps_high=0.3)
    assert r1 == r2 and hash(r1) == hash(r2)
    assert upge.get_recipe("hpt_released_code") == upge.get_recipe("hpt", variant="released_code")
    assert str(upge.part("ppo_clip", eps_low=0.2)) == "ppo_clip(eps_low=0.2)"


def test_the_documented_mixed_batch_example_runs_and_accumulates_exactly():
    import re
    import jax
    import jax.numpy as jnp
    import numpy as np
    from tests.upge.batches import random_batch

    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 2
    logp, b = random_batch(0, b=16, t=6, group_size=4, demo_last=True)
    env = dict(
        mask=b["mask"],
        rewards=b["rewards"],
        old_logp=b["old_logp"],
        is_demo=b["is_demo"],
        G=4,
        token_logp=lambda params, mb: params[mb["row"]],
    )
    env["mask"] = b["mask"]
    exec(blocks[0], env)
    batch = dict(env["batch"], row=jnp.arange(16))
    full = jax.grad(lambda p: env["loss_fn"](p, batch)[0])(logp)
    acc = sum(
        jax.grad(lambda p, mb=jax.tree.map(lambda x: x[i : i + 8], batch): env["loss_fn"](p, mb)[0])(logp)
        for i in (0, 8)
    )
    np.testing.assert_allclose(acc, full, atol=1e-7)
    exec(blocks[1], env)
    assert isinstance(env["grpo_tis"], upge.Recipe)
