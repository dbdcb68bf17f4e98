"""Named recipes: each is a few lines choosing the UPGE parts.

Every constructor takes the method's hyper-parameters as keyword arguments and
returns a frozen `Recipe`; `get_recipe(name, **hparams)` looks one up by name. On-policy RL
recipes are in `_recipes_rl`, those mixing demonstrations in `_recipes_hybrid`, the 2025–26
methods in `_recipes_2025`; preference and distillation recipes here.
A new method is a new combination — write it the same way in a notebook::

  my_recipe = Recipe('grpo_tis', terms=(Term('pg', rollout=Parts(
      stabiliser=(part('ppo_clip', eps_low=0.2, eps_high=0.28), part('tis', cap=2.0)),
      reference=part('behaviour'), advantage=part('grpo'),
      aggregation=part('token-mean'))),))
"""

from __future__ import annotations

from upt_jax.upge import _recipes_2025 as new
from upt_jax.upge._build import NONE as _NONE
from upt_jax.upge._build import pref_recipe
from upt_jax.upge._build import rl as _rl
from upt_jax.upge._parts import Recipe, Term, part
from upt_jax.upge._recipes_hybrid import hpt, luffy, srft
from upt_jax.upge._recipes_rl import (
    cispo,
    dapo,
    dr_grpo,
    grpo,
    grpo_process,
    gspo,
    ppo,
    reinforce,
    reinforce_pp,
    remax,
    rft,
    rloo,
    sft,
)


def dpo(beta: float = 0.1, label_smoothing: float = 0.0) -> Recipe:
    """DPO (Rafailov et al. 2023), sigmoid loss with label smoothing: implicit advantage.

    Batch: ``mask [B, T], ref_logp [B, T]``; ``group_size=2`` rows per pair (chosen, rejected).
    """
    return pref_recipe(
        "dpo",
        part("dpo", beta=beta, label_smoothing=label_smoothing),
        False,
        "Rafailov et al. 2023",
        "mask [B, T], ref_logp [B, T]",
    )


def ipo(beta: float = 0.1) -> Recipe:
    """IPO (Azar et al. 2023, Eq. 17): ``(h − 1/(2β))²`` with ``h`` the difference of the chosen and
    rejected sequence log-ratios ``log π/π_ref`` (sums over tokens); implicit advantage, token sum.
    (`new.ipo_length_avg` is TRL's token-mean form, which this recipe was before.)

    Batch: ``mask [B, T], ref_logp [B, T]``; pairs as groups of 2.
    """
    return pref_recipe("ipo", part("ipo", beta=beta), False, "Azar et al. 2023", "mask [B, T], ref_logp [B, T]")


def simpo(beta: float = 2.0, gamma: float = 0.5, label_smoothing: float = 0.0) -> Recipe:
    """SimPO (Meng et al. 2024): reference-free, length-normalised, margin ``γ``.

    Batch: ``mask [B, T]``; pairs as groups of 2.
    """
    return pref_recipe(
        "simpo",
        part("simpo", beta=beta, gamma=gamma, label_smoothing=label_smoothing),
        True,
        "Meng et al. 2024",
        "mask [B, T]",
    )


def orpo(lam: float = 0.1) -> Recipe:
    """ORPO (Hong et al. 2024, Eq. 6): ``mean_pairs [L_SFT + λ L_OR]``, the chosen NLL a token mean
    within each pair (the paper's ``1/m``), the odds from length-averaged log-probs. (The released
    code and TRL pool the NLL over the batch's chosen tokens instead.)

    Batch: ``mask [B, T]``; pairs as groups of 2.
    """
    return pref_recipe("orpo", part("orpo", lam=lam), True, "Hong et al. 2024", "mask [B, T]")


def distill_fkl(temperature: float = 1.0, top_k: int | None = None) -> Recipe:
    """Forward-KL distillation ``KL(p_T ‖ q_θ)`` over the vocabulary, token-mean.

    ``logp`` is the student's full log-softmax ``[B, T, V]``; ``Â_v = p_T(v)``
    (top-``k`` renormalised if asked).

    Batch: ``mask [B, T], teacher_logits [B, T, V]``.
    """
    return Recipe(
        "distill_fkl",
        (Term("distill", rollout=_rl(_NONE, "current", part("teacher_probs", temperature=temperature, top_k=top_k))),),
        "Hinton et al. 2015",
        "mask [B, T], teacher_logits [B, T, V]; logp is [B, T, V]",
    )


def distill_on_policy() -> Recipe:
    """On-policy distillation: reverse KL on the student's own samples.

    ``Â_t = −(log π_θ − log π_T)`` per sampled token (stop-gradient), ∇log π.

    Batch: ``mask [B, T], teacher_logp [B, T]``.
    """
    return Recipe(
        "distill_on_policy",
        (Term("distill", rollout=_rl(_NONE, "current", part("teacher_log_ratio"))),),
        "Agarwal et al. 2024; Thinking Machines 2025",
        "mask [B, T], teacher_logp [B, T]",
    )


RECIPES = {
    "sft": sft,
    "reinforce": reinforce,
    "ppo": ppo,
    "grpo": grpo,
    "dr_grpo": dr_grpo,
    "dapo": dapo,
    "gspo": gspo,
    "cispo": cispo,
    "rloo": rloo,
    "reinforce_pp": reinforce_pp,
    "remax": remax,
    "rft": rft,
    "grpo_process": grpo_process,
    "dpo": dpo,
    "ipo": ipo,
    "simpo": simpo,
    "orpo": orpo,
    "distill_fkl": distill_fkl,
    "distill_on_policy": distill_on_policy,
    "luffy": luffy,
    "srft": srft,
    **new.RECIPES,
    "hpt": hpt,
}


def get_recipe(name: str, **hparams) -> Recipe:
    """Looks up a named recipe and builds it with ``hparams``.

    ``'hpt_released_code'`` is shorthand for ``get_recipe('hpt', variant='released_code')``.

    Args:
      name: a key of `RECIPES` (or ``'hpt_paper_text'`` / ``'hpt_released_code'``).
      **hparams: the constructor's keyword arguments.

    Returns:
      The `Recipe`.
    """
    if name.startswith("hpt_"):
        return hpt(variant=name[len("hpt_") :], **hparams)
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; known: {sorted(RECIPES)}")
    return RECIPES[name](**hparams)


def all_recipes() -> list[Recipe]:
    """Every named recipe with default hyper-parameters (both HPT variants).

    Returns:
      A list of `Recipe` s, in `RECIPES` order, ``hpt`` last as its two variants.
    """
    out = [fn() for name, fn in RECIPES.items() if name != "hpt"]
    return out + [hpt("paper_text"), hpt("released_code")]
