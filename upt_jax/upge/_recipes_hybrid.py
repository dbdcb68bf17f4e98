"""Named recipes that mix demonstrations with rollouts: LUFFY, SRFT and HPT (both its paper's text
and its released code); each a few lines choosing the UPGE parts (see `upt_jax.upge._recipes`)."""

from __future__ import annotations

import dataclasses

from upt_jax.upge._build import NONE as _NONE
from upt_jax.upge._build import group_norm
from upt_jax.upge._build import rl as _rl
from upt_jax.upge._parts import Parts, Recipe, Term, part


def luffy(eps: float = 0.2, shaping_gamma: float = 0.1, std_eps: float = 1e-6, std_ddof: int = 0) -> Recipe:
    """LUFFY (Yan et al. 2025): rollouts and a demonstration in one group.

    Advantages are group-normalised over the union (the demo is a member of its
    group); rollouts use the PPO clip with ``old_logp``; the demonstration uses
    ``π_ref ≡ 1`` and policy shaping ``f(π) = π/(π+γ)``, no clip; token-mean over
    all tokens.
    ``std_eps``, ``std_ddof``: the ``ε`` and degrees of freedom of the group reward std
    (``ddof=0``: population std, as the paper; 1: Bessel's, as ``torch.std``).

    Batch: ``mask [B, T], rewards [B], old_logp [B, T], is_demo [B]``; groups (e.g. ``n−1`` rollouts + 1 demo).
    """
    a = group_norm(std_eps, std_ddof)
    return Recipe(
        "luffy",
        (
            Term(
                "pg",
                rollout=_rl((part("ppo_clip", eps_low=eps, eps_high=eps),), "behaviour", a),
                demo=_rl((part("policy_shaping", gamma=shaping_gamma),), "unit", a),
            ),
        ),
        "Yan et al. 2025",
        "mask [B, T], rewards [B], old_logp [B, T], is_demo [B]; groups hold the demo",
    )


def srft(
    eps: float = 0.2,
    sft_coef: float = 0.5,
    rl_coef: float = 0.1,
    threshold: float = 0.5,
    std_eps: float = 1e-6,
    std_ddof: int = 0,
) -> Recipe:
    """SRFT (Fu et al. 2025, Eq. 12): ``L = L_SFT^demo + L_RL^demo + L_RL^self``.

    ``H̄_i`` is the mean token entropy of the policy on row ``i`` (``batch['entropy']``,
    stop-gradient). Each term is a token mean over its own rows:

    * ``sft`` (demos): NLL weighted by ``w_SFT = sft_coef · sg(exp(−H̄))``.
    * ``rl_demo`` (demos): off-policy RL with ``π_ref ≡ 1`` (ratio ``π_θ``), PPO clip,
      advantage group-normalised over the question's rollouts *and* its demo.
    * ``rl_self`` (rollouts): ``±1`` REINFORCE (reward > ``threshold``: +1, else −1),
      ∇log π, no ratio; positives weighted by ``w_RL = rl_coef · sg(exp(+H̄))``.

    ``std_eps``, ``std_ddof``: the ``rl_demo`` advantage's group std (see `grpo`).

    Batch: ``mask [B, T], rewards [B], entropy [B, T], is_demo [B]``; groups = rollouts + demo.
    """
    return Recipe(
        "srft",
        (
            Term("sft", demo=_rl((part("entropy_weight", coef=sft_coef, form="exp_neg"),), "current", part("one"))),
            Term(
                "rl_demo",
                demo=_rl(
                    (part("ppo_clip", eps_low=eps, eps_high=eps),), "unit", group_norm(std_eps, std_ddof, rows="all")
                ),
            ),
            Term(
                "rl_self",
                rollout=_rl(
                    (part("entropy_weight", coef=rl_coef, form="exp", positive_only=True, threshold=threshold),),
                    "current",
                    part("sign", threshold=threshold),
                ),
            ),
        ),
        "Fu et al. 2025",
        "mask [B, T], rewards [B], entropy [B, T], is_demo [B]; groups = rollouts + demo",
    )


def hpt(
    variant: str = "paper_text",
    gamma: float = 0.0,
    eps: float = 0.2,
    max_len: int | None = None,
    gate: str = "hard",
    offline: str = "sft",
    shaping_gamma: float = 0.1,
    sft_loss_coef: float = 1.0,
    std_eps: float = 1e-6,
    std_ddof: int = 0,
    entropy_coef: float = 0.0,
    **gate_kwargs,
) -> Recipe:
    """HPT (Lv et al. 2025): per question, RL on its rollouts or SFT on its demonstration.

    The gate reads the question's pass rate ``P`` (rollouts with reward > 0.5);
    ``'hard'``: ``P > γ`` → RL (α=1, β=0), else SFT (α=0, β=1). Other gates:
    ``'soft'``, ``'linear'``, ``'mix'`` (see `upt_jax.upge.gates`).

    * ``variant='paper_text'`` (Eq. 11): RL term with PPO clip and
      ``(r − mean)/(std + 1e-6)``, token-mean over the rollouts of RL-routed
      questions; SFT term token-mean over demos of SFT-routed questions;
      L = L_RL + sft_loss_coef · L_SFT (the paper: coefficient 1).
    * ``variant='released_code'`` (``mix_actor.py``, ``offline_loss_type='sft'``, as
      ``exp_scripts/train.sh`` runs it): ``L = L_RL + sft_loss_coef · L_SFT``.

      - ``rl``: no clip (plain ratio), ``Â = r − mean_g``, token sum over the rollouts of
        RL-routed questions divided by ``L · n`` (``L = max_len``, default ``T``; ``n`` =
        routed rows: the rollouts of RL-routed questions plus one demonstration per
        SFT-routed question — the demos sit in the denominator with ``Â ≡ 0``).
      - ``sft``: the NLL token mean pooled over the demonstration tokens of SFT-routed
        questions (``compute_sft_pure_loss``), times ``sft_loss_coef`` (default 1.0, the
        released default; it multiplies only this term).

      The released code adds, per micro-batch, the RL sum ``Σ/L`` (not divided by rows)
      and the micro-batch's SFT token mean, and sums micro-batch gradients; its RL:SFT
      weight so depends on the micro-batching: with one micro-batch of ``R`` rows per
      device it is ``R`` times this one's (``sft_loss_coef = c / R`` reproduces a released ``c``).

    ``offline`` (``paper_text`` only) is what an SFT-routed question learns from its
    demonstration (the offline-signal ablation): ``'sft'`` (NLL, the paper),
    ``'rl'`` (off-policy RL as LUFFY's demonstration term: ``π_ref ≡ 1``, shaping
    ``f(π) = π/(π+shaping_gamma)``, advantage group-normalised over the question's
    rollouts and demonstration, token-mean over routed demos) or ``'both'`` (the two
    terms added).

    ``std_eps``, ``std_ddof``: the group std of ``paper_text``'s advantages (see `grpo`;
    ``released_code`` divides by no std).

    ``entropy_coef`` ``c > 0`` adds a term ``entropy_bonus = −c · Σ_{routed rows, t} H_t / Σ_{routed
    rows, t} 1``: the entropy token mean pooled over every routed row (the rollouts of RL-routed
    questions and the demonstrations of SFT-routed ones), as the released code's
    ``entropy_coeff`` (``masked_mean(entropy, response_mask)`` over the micro-batch's rows; it
    ran 0.001). Its policy-gradient part is 0 (advantage ≡ 0); only the bonus carries gradient.

    Batch: ``mask [B, T], rewards [B], old_logp [B, T], is_demo [B]``; a group is a question's rollouts and its demo.
    """
    gkw = dict(gate_kwargs)
    if gate in ("hard", "soft"):
        gkw.setdefault("gamma", gamma)
    g_rl = part("hpt", gate=gate, branch="rl", **gkw)
    g_sft = part("hpt", gate=gate, branch="sft", **gkw)
    notes = "mask [B, T], rewards [B], old_logp [B, T], is_demo [B]; groups = rollouts + demo"
    if variant == "paper_text":
        if offline not in ("sft", "rl", "both"):
            raise ValueError(f"HPT offline={offline!r}: 'sft', 'rl' or 'both'")
        rl = _rl((part("ppo_clip", eps_low=eps, eps_high=eps),), "behaviour", group_norm(std_eps, std_ddof))
        sf = _rl(_NONE, "current", part("one"))
        od = _rl((part("policy_shaping", gamma=shaping_gamma),), "unit", group_norm(std_eps, std_ddof, rows="all"))
        terms = [Term("rl", rollout=Parts(rl.stabiliser, rl.reference, rl.advantage, rl.aggregation, g_rl))]
        if offline in ("sft", "both"):
            terms.append(
                Term(
                    "sft",
                    demo=Parts(sf.stabiliser, sf.reference, sf.advantage, sf.aggregation, g_sft),
                    coef=sft_loss_coef,
                )
            )
        if offline in ("rl", "both"):
            terms.append(Term("rl_demo", demo=Parts(od.stabiliser, od.reference, od.advantage, od.aggregation, g_sft)))
        name = "hpt" if offline == "sft" else f"hpt_offline_{offline}"
        return _with_entropy_bonus(
            Recipe(name, tuple(terms), "Lv et al. 2025 (paper text, Eq. 11)", notes), entropy_coef, g_rl, g_sft
        )
    if variant == "released_code":
        if offline != "sft":
            raise ValueError(f"HPT offline={offline!r} is defined for variant='paper_text' only")
        rl = _rl(_NONE, "behaviour", part("dr_grpo"), "seq-mean-token-sum-norm", max_len=max_len)
        # a routed demo counts one row in the RL denominator and adds nothing to its sum
        seat = _rl(_NONE, "current", part("one", value=0.0), "seq-mean-token-sum-norm", max_len=max_len)
        sf = _rl(_NONE, "current", part("one"))
        return _with_entropy_bonus(
            Recipe(
                "hpt_released_code",
                (
                    Term(
                        "rl",
                        rollout=Parts(rl.stabiliser, rl.reference, rl.advantage, rl.aggregation, g_rl),
                        demo=Parts(seat.stabiliser, seat.reference, seat.advantage, seat.aggregation, g_sft),
                    ),
                    Term(
                        "sft",
                        demo=Parts(sf.stabiliser, sf.reference, sf.advantage, sf.aggregation, g_sft),
                        coef=sft_loss_coef,
                    ),
                ),
                "Lv et al. 2025 (released code)",
                notes,
            ),
            entropy_coef,
            g_rl,
            g_sft,
        )
    raise ValueError(f"unknown HPT variant {variant!r}: 'paper_text' or 'released_code'")


def _with_entropy_bonus(recipe: Recipe, coef: float, g_rl, g_sft) -> Recipe:
    """``recipe`` plus HPT's ``entropy_bonus`` term (token mean over every routed row), when ``coef``."""
    if not coef:
        return recipe
    zero = _rl(_NONE, "current", part("one", value=0.0))
    term = Term(
        "entropy_bonus",
        rollout=Parts(zero.stabiliser, zero.reference, zero.advantage, zero.aggregation, g_rl),
        demo=Parts(zero.stabiliser, zero.reference, zero.advantage, zero.aggregation, g_sft),
        entropy_coef=coef,
    )
    return dataclasses.replace(recipe, terms=recipe.terms + (term,))
