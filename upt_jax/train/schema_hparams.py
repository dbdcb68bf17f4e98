"""The schema of ``config.recipe.hparams``: each registered recipe's hyper-parameters, read from its
constructor's signature, with a domain and doc per name (`recipe_hparams`; see
`upt_jax.train.schema`)."""

from __future__ import annotations

import functools
import inspect
import types
import typing
from typing import Any

from upt_jax.train.schema_domains import ConfigError, Key, anything, choice, flag, number, plain


# ----------------------------------------------------------------------------- recipe hyper-parameters
# domain and doc of each hyper-parameter, by name; (recipe, name) where a recipe means something else
_NONNEG = dict(lo=0)
_POS = dict(lo=0, lo_open=True)
_HPARAMS: dict = {
    "eps": (number(float, **_POS), "PPO clip ε: the ratio is clipped to [1 − ε, 1 + ε]"),
    "eps_low": (number(float, **_POS), "clip ε below: the ratio is clipped at 1 − eps_low"),
    "eps_high": (number(float, **_POS), "clip ε above (clip-higher): the ratio is clipped at 1 + eps_high"),
    "kl_coef": (number(float, **_NONNEG), "β of the KL to the frozen reference (0: no KL, no reference model)"),
    "kl_kind": (None, "the KL estimator"),  # filled from upge.KL_ESTIMATORS
    "std_eps": (number(float, **_POS), "ε added to the group's reward std"),
    "max_len": (number(int, lo=1, none="the padded length T"), "the constant L of the token-sum / L aggregation"),
    "dynamic_sampling": (flag(), "drop groups whose rewards are all equal (from sum and denominator)"),
    "baseline": (flag(), "REINFORCE++-baseline (r − group mean, whitened); False: plain REINFORCE++ with k1 KL"),
    "dual_clip_c": (number(float, lo=1, lo_open=True, none="ordinary PPO clip"), "dual-clip PPO's c > 1"),
    "gamma": (number(float, lo=0, hi=1), "GAE discount γ"),
    "lam": (number(float, lo=0, hi=1), "GAE λ"),
    "threshold": (number(float), "a rollout is correct when its reward exceeds this"),
    "beta": (number(float, **_POS), "β: the scale of the implicit reward log π/π_ref"),
    "label_smoothing": (number(float, lo=0, hi=0.5, hi_open=True), "the assumed fraction of flipped preferences"),
    "temperature": (number(float, **_POS), "the teacher's softmax temperature"),
    "top_k": (
        number(int, lo=1, none="the whole vocabulary"),
        "keep the teacher's k likeliest entries per position (renormalised)",
    ),
    "shaping_gamma": (number(float, **_POS), "policy shaping f(π) = π / (π + γ) on demonstration tokens"),
    "sft_coef": (number(float, **_NONNEG), "weight of the demonstration NLL: sft_coef · exp(−H̄)"),
    "sft_loss_coef": (
        number(float, **_NONNEG),
        "HPT: weight of the SFT term (token mean over routed demonstrations), as the released code's sft_loss_coef",
    ),
    "rl_coef": (number(float, **_NONNEG), "weight of positive self-rollouts: rl_coef · exp(+H̄)"),
    "std_ddof": (
        number(int, lo=0, hi=1),
        "degrees of freedom of the group reward std: 0 population (the papers), 1 Bessel (torch.std, TRL)",
    ),
    "tau_pos": (number(float, **_POS), "SAPO: soft-gate temperature τ for positive advantages"),
    "tau_neg": (
        number(float, **_POS),
        "SAPO: soft-gate temperature τ for negative advantages (> tau_pos: faster decay)",
    ),
    "ratio": (number(float, lo=0, hi=1, lo_open=True), "fraction r of the batch's tokens selected by covariance"),
    "cov_low": (number(float), "Clip-Cov: candidates have covariance above this (ω_low)"),
    "cov_high": (number(float), "Clip-Cov: candidates have covariance below this (ω_high)"),
    "seed": (number(int, lo=0), "Clip-Cov: seed of the random draw among the candidates"),
    "ppo_kl_coef": (number(float, **_NONNEG), "KL-Cov: β of |log π − log π_old| on the selected tokens"),
    "delta_low": (number(float, **_POS), "DPPO: divergence threshold δ for negative advantages"),
    "delta_high": (number(float, **_POS), "DPPO: divergence threshold δ for positive advantages"),
    "is_cap": (number(float, lo=1, none="no truncation"), "DPPO: truncation C of the importance weight min(r, C)"),
    "scale_by_std": (flag(), "GPG: divide the advantage by the group std + std_eps (F_norm); False: F_norm = 1"),
    ("opd_pg", "alpha"): (
        number(float, **_NONNEG),
        "weight α of the outcome advantage added to the distillation reward",
    ),
    "desirable_weight": (number(float, **_POS), "KTO: λ_D, weight of desirable rows"),
    "undesirable_weight": (number(float, **_POS), "KTO: λ_U, weight of undesirable rows"),
    ("clip_cov", "eps"): (number(float, **_POS, none="no PPO clip (the paper)"), "PPO clip ε on top of Clip-Cov"),
    ("gmpo", "eps_low"): (number(float, **_POS), "GMPO: the token log-ratio is clipped at −eps_low (log space)"),
    ("gmpo", "eps_high"): (number(float, **_POS), "GMPO: the token log-ratio is clipped at +eps_high (log space)"),
    ("simpo", "gamma"): (number(float), "SimPO's target reward margin γ"),
    ("simpo", "beta"): (number(float, **_POS), "SimPO's reward scale β"),
    ("orpo", "lam"): (number(float, **_NONNEG), "λ: weight of the odds-ratio term"),
    ("hpt", "variant"): (
        choice(("paper_text", "released_code")),
        "paper_text (Eq. 11) or released_code (as the authors' script ran)",
    ),
    ("hpt", "gamma"): (number(float), "gate threshold γ: P > γ → RL, else SFT (0 ≤ γ < 1; gate hard/soft)"),
    ("hpt", "gate"): (None, "how the pass rate P routes a question"),  # filled from the gates
    ("hpt", "offline"): (
        choice(("sft", "rl", "both")),
        "paper_text: what an SFT-routed question learns from its demonstration",
    ),
    ("hpt", "max_len"): (number(int, lo=1, none="the padded length T"), "released_code: the L of token-sum / L"),
    ("hpt", "threshold"): (number(float), "a rollout counts as passed when its reward exceeds this"),
    ("hpt", "temperature"): (number(float, **_POS), "gate=soft: α = σ((P − γ) / temperature)"),
    ("hpt", "entropy_coef"): (
        number(float, **_NONNEG),
        "entropy bonus −c · (token mean of H over every routed row), as the released code's entropy_coeff (0: none)",
    ),
    ("hpt", "alpha"): (number(float), "gate=mix: the constant RL weight α"),
    ("hpt", "beta"): (number(float), "gate=mix: the constant SFT weight β"),
}
# HPT's **gate_kwargs: (name, default, the gate it applies to or None for every gate)
_HPT_GATE_KWARGS = (("threshold", 0.5, None), ("temperature", 0.1, "soft"), ("alpha", 1.0, "mix"), ("beta", 1.0, "mix"))


def recipe_names() -> tuple[str, ...]:
    """Every ``config.recipe.name``: the keys of ``upge.RECIPES`` and HPT's two variant names."""
    from upt_jax import upge

    return tuple(upge.RECIPES) + ("hpt_paper_text", "hpt_released_code")


def from_annotation(ann) -> tuple[Any, bool]:
    """``(type, optional)`` of an annotation: ``float``, ``int | None`` → ``(int, True)``, else object."""
    args = (
        typing.get_args(ann) if isinstance(ann, types.UnionType) or typing.get_origin(ann) is typing.Union else (ann,)
    )
    optional = type(None) in args
    rest = [a for a in args if a is not type(None)]
    if len(rest) == 1 and rest[0] in (float, int, str, bool):
        return rest[0], optional
    return object, optional


@functools.lru_cache(maxsize=None)
def _recipe_hparams(name: str) -> tuple[Key, ...]:
    from upt_jax import upge
    from upt_jax.upge._gates import GATES

    base = "hpt" if name.startswith("hpt_") else name
    fn = upge.RECIPES[base]
    out = []
    for p in inspect.signature(fn, eval_str=True).parameters.values():
        if p.kind is p.VAR_KEYWORD or (base != name and p.name == "variant"):
            continue
        dom, doc = _HPARAMS.get((base, p.name)) or _HPARAMS.get(p.name) or (None, "")
        if p.name == "kl_kind":
            dom = choice(upge.KL_ESTIMATORS)
        elif (base, p.name) == ("hpt", "gate"):
            dom = choice(GATES)
        if dom is None:  # not in the table: any value of its annotation (tests/train/test_schema.py wants one)
            dom = anything(from_annotation(p.annotation)[0])
        out.append(Key(f"recipe.hparams.{p.name}", dom, doc, p.default))
    if base == "hpt":
        for kw, default, gate in _HPT_GATE_KWARGS:
            dom, doc = _HPARAMS[("hpt", kw)]
            out.append(Key(f"recipe.hparams.{kw}", dom, doc, default, only_with=gate or ""))
    return tuple(out)


def recipe_hparams(name: str) -> dict[str, Key]:
    """``{hyper-parameter: Key}`` of recipe ``name`` (``config.recipe.name``): the keyword
    arguments of its ``upge`` constructor with their defaults (``hpt_<variant>``: ``hpt`` without
    ``variant``; HPT's gate keyword arguments included, ``Key.section`` naming their gate)."""
    if name not in recipe_names():
        raise ConfigError(f"config.recipe.name={name!r}: must be one of {', '.join(recipe_names())}")
    return {k.path.rsplit(".", 1)[1]: k for k in _recipe_hparams(name)}


def check_hparams(config, prefix: str) -> None:
    """``recipe.hparams``: known names for the configured recipe, values in their domains, HPT's
    gate keywords only with their gate, and the recipe builds."""
    from upt_jax import upge

    name = config.recipe.name
    hp = plain(config.recipe.hparams) or {}
    known = recipe_hparams(name)
    for k, v in hp.items():
        if k not in known:
            raise ConfigError(
                f"{prefix}recipe.hparams.{k}: recipe {name!r} has no such hyper-parameter; "
                f"its hyper-parameters: {', '.join(known) or 'none'}"
            )
        known[k].check(v, prefix)
        gate = hp.get("gate", "hard")
        if known[k].only_with and known[k].only_with != gate:
            raise ConfigError(
                f"{prefix}recipe.hparams.{k}={v!r} applies to gate={known[k].only_with!r} only, "
                f"not {prefix}recipe.hparams.gate={gate!r}"
            )
    try:
        upge.get_recipe(name, **hp)
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"{prefix}recipe.hparams={hp}: recipe {name!r} does not build: {e}") from e


# the built-in families' corpus options (`upt_jax.data.tasks.TaskFamily.corpus_doc` keyword
# arguments); a user family's options are any value of their annotation
_CORPUS_OPTIONS = {
    "labelled_facts": (number(float, lo=0, hi=1), "countdown: the share of fact documents written with value labels"),
}
# the keywords `upt_jax.train.records.corpus_records` passes itself
_CORPUS_OWN = ("seed", "demo_fraction", "facts_per_doc", "tokenizer", "make", "facts")


def corpus_entries(config) -> dict[str, Key]:
    """The keys of ``data.corpus.options``: the keyword-only arguments of the ``corpus_doc`` of the
    family that owns ``data.corpus.tiers`` (none when the tiers are unknown or of several families:
    `corpus_records` reports that)."""
    from upt_jax.data import tasks

    try:
        families = {tasks.task_of(t).name for t in config.data.corpus.tiers}
    except (KeyError, ValueError):
        return {}
    family = tasks.get_task(families.pop()) if len(families) == 1 else None
    if family is None or family.corpus_doc is None:
        return {}
    out = {}
    for p in inspect.signature(family.corpus_doc, eval_str=True).parameters.values():
        if p.kind is not p.KEYWORD_ONLY or p.name in _CORPUS_OWN:
            continue
        dom, doc = _CORPUS_OPTIONS.get(p.name) or (anything(from_annotation(p.annotation)[0]), "")
        out[p.name] = Key(f"data.corpus.options.{p.name}", dom, doc, p.default)
    return out
