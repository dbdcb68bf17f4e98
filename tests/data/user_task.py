"""A task family defined outside upt_jax, as a user would write one (tests/data/test_tasks.py
runs it through pre-training, GRPO and evaluation by its tier names alone)."""

import random

from upt_jax.data import tasks


def make(tier, seed, index):
    rng = random.Random(f"user_task/{seed}/{tier}/{index}")
    n = {"count_3": 3, "count_6": 6}[tier]
    word = "".join(rng.choice("xy") for _ in range(n))
    k = word.count("x")
    steps = "\n".join(f"{word[: i + 1]}: {word[: i + 1].count('x')}" for i in range(n))
    return dict(question=f"How many x in {word}?", answer=str(k), demonstration=f"{steps}\n\\boxed{{{k}}}")


def corpus_doc(rng, tiers, template, *, seed=0, **options):
    from upt_jax.data.templates import join, render_prompt

    rec = make(tiers[rng.randrange(len(tiers))], -1 - seed, rng.randrange(1 << 30))
    return join(render_prompt(rec["question"], template), rec["demonstration"], template)


COUNT = tasks.register_task(
    tasks.TaskFamily(
        name="count",
        tiers=(tasks.TaskTier("count_3", "base"), tasks.TaskTier("count_6", "sft")),
        make_record=make,
        verifier="integer",
        corpus_doc=corpus_doc,
        description="Count the x's in a word of x and y.",
    ),
    replace=True,
)
