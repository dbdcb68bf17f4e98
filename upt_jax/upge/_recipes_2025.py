"""Recipes of the 2025–26 losses (issue #24), and the earlier forms of ``rloo`` and ``ipo``.

Each is a few lines choosing UPGE parts (the parts themselves: `_trust`, `_cov`, `_kto`,
registered by `_wiring`). `RECIPES` is merged into `upt_jax.upge.RECIPES`.
"""

from __future__ import annotations

from upt_jax.upge._build import NONE, group_norm, pref_recipe, rl
from upt_jax.upge._parts import Parts, Recipe, Term, part

_PG = "mask [B, T], rewards [B], old_logp [B, T]; groups"


def sapo(tau_pos: float = 1.0, tau_neg: float = 1.05, std_eps: float = 1e-6, std_ddof: int = 0) -> Recipe:
    """SAPO (Gao et al. 2025): a soft, temperature-controlled gate instead of the hard clip.

    Objective ``(1/G) Σ_i (1/|y_i|) Σ_t f(r_{i,t}) Â_i`` with ``f(r) = (4/τ) σ(τ (r − 1))``,
    ``τ = τ_pos`` for ``Â > 0``, ``τ_neg`` otherwise; group-normalised ``Â`` (GRPO's), the ratio
    against ``old_logp``, seq-mean-token-mean. Gradient ``f'(r) Â r ∇log π``: the ``sapo``
    stabiliser is ``f'(r)`` with the behaviour reference.

    Batch: ``mask [B, T], rewards [B], old_logp [B, T]``; groups.
    """
    return Recipe(
        "sapo",
        (
            Term(
                "pg",
                rollout=rl(
                    (part("sapo", tau_pos=tau_pos, tau_neg=tau_neg),),
                    "behaviour",
                    group_norm(std_eps, std_ddof),
                    "seq-mean-token-mean",
                ),
            ),
        ),
        "Gao et al. 2025 (SAPO)",
        _PG,
    )


def gmpo(eps_low: float = 0.4, eps_high: float = 0.4, std_eps: float = 1e-6, std_ddof: int = 0) -> Recipe:
    """GMPO (Zhao et al. 2025): the geometric mean of the clipped token ratios, one term per sequence.

    Objective ``(1/G) Σ_i Â_i · exp((1/|o_i|) Σ_t ℓ̃_{i,t})`` with ``ℓ̃`` the token log-ratio
    clipped to ``[−ε_low, ε_high]`` on the side the advantage pushes (``min`` of
    ``sgn(Â)·ℓ`` and its clip): ``gmpo`` reference (value ``s̃_i``), ``gmpo_clip`` mask,
    seq-mean-token-mean, group-normalised ``Â``.

    Batch: ``mask [B, T], rewards [B], old_logp [B, T]``; groups.
    """
    kw = dict(eps_low=eps_low, eps_high=eps_high)
    return Recipe(
        "gmpo",
        (
            Term(
                "pg",
                rollout=Parts(
                    stabiliser=(part("gmpo_clip", **kw),),
                    reference=part("gmpo", **kw),
                    advantage=group_norm(std_eps, std_ddof),
                    aggregation=part("seq-mean-token-mean"),
                ),
            ),
        ),
        "Zhao et al. 2025 (GMPO)",
        _PG,
    )


def gpg(scale_by_std: bool = False, std_eps: float = 1e-6, std_ddof: int = 0) -> Recipe:
    """GPG (Chu et al. 2025): plain policy gradient with a corrected group advantage.

    ``L = −Σ_{i,t} Â_i log π_θ(o_{i,t}) / Σ_i |o_i|``, ``Â_i = α (r_i − μ_g) / F_norm`` with
    ``α = B/(B − M)`` (``M`` rows in groups whose rewards are all equal) and ``F_norm = 1`` (or
    ``σ_g + std_eps`` with ``scale_by_std``): ∇log π, no ratio, no clip, no KL, token-mean.

    Batch: ``mask [B, T], rewards [B]``; groups.
    """
    adv = part("gpg", scale_by_std=scale_by_std or None, eps=std_eps if scale_by_std else None, ddof=std_ddof or None)
    return Recipe(
        "gpg",
        (Term("pg", rollout=rl(NONE, "current", adv)),),
        "Chu et al. 2025 (GPG)",
        "mask [B, T], rewards [B]; groups",
    )


def clip_cov(
    ratio: float = 2e-4,
    cov_low: float = 1.0,
    cov_high: float = 5.0,
    eps: float | None = 0.2,
    seed: int = 0,
    std_eps: float = 1e-6,
    std_ddof: int = 0,
) -> Recipe:
    """Clip-Cov (Cui et al. 2025): no gradient for ``r·N`` random tokens of high covariance.

    ``L = −Σ_{t ∉ I} min(ρ_t Â_t, clip(ρ_t, 1 ± ε) Â_t) / N`` (PPO clip ``eps``, None: off;
    token-mean over all ``N`` tokens; group-normalised ``Â``); ``I`` holds ``max(1, ⌊r·N⌋)``
    tokens drawn at random among those with ``ω_low < Cov_t < ω_high`` that the clip does not
    already hold (`upt_jax.upge._cov`), chosen in `prepare` on the whole batch. The draw:
    ``batch['clip_cov_uniforms'] [B, T]`` (the trainer draws them from its step key), else from
    ``seed`` and a hash of the batch.

    Batch: ``mask [B, T], rewards [B], old_logp [B, T]``; groups.
    """
    st = (part("ppo_clip", eps_low=eps, eps_high=eps),) if eps else NONE
    adv = part(
        "clip_cov",
        ratio=ratio,
        cov_low=cov_low,
        cov_high=cov_high,
        seed=seed,
        eps=std_eps,
        ddof=std_ddof or None,
        clip_low=eps or None,
        clip_high=eps or None,
    )
    return Recipe("clip_cov", (Term("pg", rollout=rl(st, "behaviour", adv)),), "Cui et al. 2025 (Clip-Cov)", _PG)


def kl_cov(ratio: float = 2e-4, ppo_kl_coef: float = 1.0, std_eps: float = 1e-6, std_ddof: int = 0) -> Recipe:
    """KL-Cov (Cui et al. 2025): ``β |log π_θ − log π_old|`` on the ``r·N`` tokens of largest covariance.

    ``L = Σ_t (−r_t Â_t + β 1[t ∈ I] |log π_θ − log π_old|) / N``: term ``pg`` (ratio, no clip,
    group-normalised ``Â``) and term ``kl_cov`` (``∇|Δ| = sign(Δ) ∇log π`` on the selected
    tokens), both token-means over the same tokens, so their sum is the paper's one mean.

    Batch: ``mask [B, T], rewards [B], old_logp [B, T]``; groups.
    """
    return Recipe(
        "kl_cov",
        (
            Term("pg", rollout=rl(NONE, "behaviour", group_norm(std_eps, std_ddof))),
            Term(
                "kl_cov",
                rollout=rl(
                    (part("log_ratio_sign"),),
                    "current",
                    part("kl_cov", ratio=ratio, coef=ppo_kl_coef, eps=std_eps, ddof=std_ddof or None),
                ),
            ),
        ),
        "Cui et al. 2025 (KL-Cov)",
        _PG,
    )


def _dppo(name, divergence, delta_low, delta_high, is_cap, max_len):
    cap = 1e9 if is_cap is None else is_cap - 1.0
    st = (
        part("dppo", divergence=divergence, delta_low=delta_low, delta_high=delta_high),
        part("cispo", eps_low=1e9, eps_high=cap),
    )
    return Recipe(
        name,
        (Term("pg", rollout=rl(st, "current", part("dr_grpo"), "seq-mean-token-sum-norm", max_len=max_len)),),
        "Qi et al. 2026 (DPPO)",
        _PG,
    )


def dppo_tv(
    delta_low: float = 0.15, delta_high: float = 0.15, is_cap: float | None = 20.0, max_len: int | None = None
) -> Recipe:
    """DPPO-Binary-TV (Qi et al. 2026): a trust region on the sampled token's TV, not its ratio.

    ``L = −Σ M_t sg(w_t) Â log π_θ(o_t)`` with ``w_t = min(r_t, C)`` (truncated IS, ``C = is_cap``,
    the paper's Sec. 5.4; None: no truncation) and ``M_t = 0`` when the update would move
    ``π_θ(o_t) − π_old(o_t)`` past ``δ`` (``Â > 0``: ``> δ_high``; ``Â ≤ 0``: ``< −δ_low``);
    ``Â = r − mean_g`` and token sum / ``L`` (Dr.GRPO, as the authors run it).

    Batch: ``mask [B, T], rewards [B], old_logp [B, T]``; groups.
    """
    return _dppo("dppo_tv", "tv", delta_low, delta_high, is_cap, max_len)


def dppo_kl(
    delta_low: float = 0.05, delta_high: float = 0.05, is_cap: float | None = 20.0, max_len: int | None = None
) -> Recipe:
    """DPPO-Binary-KL (Qi et al. 2026): as `dppo_tv` with ``KL(Bern(π_old(o_t)) ‖ Bern(π_θ(o_t)))``.

    A token is masked when that KL exceeds ``δ`` and the update moves ``π_θ(o_t)`` further away.

    Batch: ``mask [B, T], rewards [B], old_logp [B, T]``; groups.
    """
    return _dppo("dppo_kl", "kl", delta_low, delta_high, is_cap, max_len)


def opd_pg(alpha: float = 1.0, eps: float = 0.2, std_eps: float = 1e-6, std_ddof: int = 0) -> Recipe:
    """On-policy distillation mixed with a GRPO outcome term, one coefficient ``alpha``.

    Per-token advantage ``Â_t = −(log π_old(o_t) − log π_T(o_t)) + α (r − μ_g)/(σ_g + ε)``: the
    sampled token's reverse-KL reward (Agarwal et al. 2024; Thinking Machines 2025), measured with
    the behaviour log-probs, plus GRPO's outcome advantage; PPO clip on the ratio against
    ``old_logp``; token-mean. ``alpha = 0`` on-policy is `distill_on_policy`.

    Batch: ``mask [B, T], rewards [B], old_logp [B, T], teacher_logp [B, T]``; groups.
    """
    return Recipe(
        "opd_pg",
        (
            Term(
                "pg",
                rollout=rl(
                    (part("ppo_clip", eps_low=eps, eps_high=eps),),
                    "behaviour",
                    part("opd", alpha=alpha, eps=std_eps, ddof=std_ddof or None),
                ),
            ),
        ),
        "Agarwal et al. 2024; Thinking Machines 2025 (on-policy distillation) + Shao et al. 2024",
        _PG.replace("; groups", ", teacher_logp [B, T]; groups"),
    )


def kto(beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> Recipe:
    """KTO (Ethayarajh et al. 2024) on unpaired completions labelled desirable or undesirable.

    ``L = mean_i λ_{y_i} (1 − σ(β (r_θ − z₀) · (±1)))``, ``r_θ = Σ_t log π_θ/π_ref``, ``z₀`` the
    batch's reference point (``kto_z0``, see `upt_jax.upge._kto`); implicit advantage, ∇log π,
    token sum per row, mean over rows.

    Batch: ``mask [B, T], ref_logp [B, T], kto_label [B], kto_z0 [B]``; one row per completion.
    """
    return Recipe(
        "kto",
        (
            Term(
                "kto",
                rollout=rl(
                    NONE,
                    "current",
                    part("kto", beta=beta, desirable_weight=desirable_weight, undesirable_weight=undesirable_weight),
                    "seq-mean-token-sum",
                ),
            ),
        ),
        "Ethayarajh et al. 2024 (KTO)",
        "mask [B, T], ref_logp [B, T], kto_label [B], kto_z0 [B]; unpaired rows",
    )


def rloo_ppo(eps: float = 0.2) -> Recipe:
    """RLOO's leave-one-out advantage with the PPO clip and token-mean (``rloo``'s earlier form).

    Batch: ``mask [B, T], rewards [B], old_logp [B, T]``; groups.
    """
    return Recipe(
        "rloo_ppo",
        (Term("pg", rollout=rl((part("ppo_clip", eps_low=eps, eps_high=eps),), "behaviour", part("rloo"))),),
        "Ahmadian et al. 2024 (PPO-clipped, token-mean variant)",
        _PG,
    )


def ipo_length_avg(beta: float = 0.1) -> Recipe:
    """IPO with length-averaged log-ratios, as TRL computes it (``ipo``'s earlier form).

    Batch: ``mask [B, T], ref_logp [B, T]``; pairs as groups of 2.
    """
    return pref_recipe(
        "ipo_length_avg",
        part("ipo", beta=beta, length_average=True),
        True,
        "Azar et al. 2023 (TRL: length-averaged)",
        "mask [B, T], ref_logp [B, T]",
    )


RECIPES = {
    "sapo": sapo,
    "gmpo": gmpo,
    "gpg": gpg,
    "clip_cov": clip_cov,
    "kl_cov": kl_cov,
    "dppo_tv": dppo_tv,
    "dppo_kl": dppo_kl,
    "opd_pg": opd_pg,
    "kto": kto,
    "rloo_ppo": rloo_ppo,
    "ipo_length_avg": ipo_length_avg,
}
