"""Small builders the recipe modules share: a term's `Parts` from part names."""

from __future__ import annotations

from upt_jax.upge._parts import Part, Parts, Recipe, Term, part

NONE = (part("none"),)


def rl(stabiliser, reference, advantage, aggregation="token-mean", **agg) -> Parts:
    """`Parts` from a stabiliser tuple, a reference name, an advantage `Part` and an aggregation name."""
    return Parts(
        stabiliser=tuple(stabiliser),
        reference=part(reference),
        advantage=advantage,
        aggregation=part(aggregation, **agg),
    )


def group_norm(std_eps: float = 1e-6, std_ddof: int = 0, **kw) -> Part:
    """The group-normalised advantage part ``(r − μ_g)/(σ_g + std_eps)``, ``σ_g`` with ``std_ddof``."""
    return part("grpo", eps=std_eps, ddof=std_ddof or None, **kw)


def pref_recipe(name, adv, length_normalise, citation, notes, term=None) -> Recipe:
    """A pairwise preference recipe: ∇log π, token mean (or sum) per response, mean over pairs."""
    agg = "seq-mean-token-mean" if length_normalise else "seq-mean-token-sum"
    return Recipe(
        name,
        (Term(term or name, rollout=rl(NONE, "current", adv, agg, rows_per_example=2)),),
        citation,
        notes + "; pairs as groups of 2 rows (chosen, rejected)",
    )
