"""Named recipes of on-policy RL (and SFT, the degenerate case): SFT, REINFORCE, PPO, GRPO and
its variants (Dr.GRPO, DAPO, GSPO, CISPO), RLOO, REINFORCE++, ReMax, process-supervised GRPO
and RFT; each a few lines choosing the UPGE parts (see `upt_jax.upge._recipes`)."""

from __future__ import annotations

from upt_jax.upge._build import NONE as _NONE
from upt_jax.upge._build import group_norm
from upt_jax.upge._build import rl as _rl
from upt_jax.upge._parts import KLPenalty, Parts, Recipe, Term, part


def sft() -> Recipe:
    """SFT: ``Â ≡ 1``, ``π_ref = π_θ`` (∇log π), token-mean; the NLL's gradient.

    Batch: ``mask [B, T]`` (rows are demonstrations or any target text).
    """
    return Recipe(
        "sft", (Term("sft", rollout=_rl(_NONE, "current", part("one"))),), "supervised fine-tuning (NLL)", "mask [B, T]"
    )


def reinforce() -> Recipe:
    """REINFORCE (Williams 1992): ``Â_i = r_i``, ∇log π, token-mean.

    Batch: ``mask [B, T], rewards [B]``.
    """
    return Recipe(
        "reinforce",
        (Term("pg", rollout=_rl(_NONE, "current", part("reinforce"))),),
        "Williams 1992",
        "mask [B, T], rewards [B]",
    )


def ppo(
    eps: float = 0.2,
    gamma: float = 1.0,
    lam: float = 0.95,
    dual_clip_c: float | None = None,
    kl_coef: float = 0.0,
    kl_kind: str = "k1",
) -> Recipe:
    """PPO (Schulman et al. 2017): GAE advantages from a critic, clipped ratio, token-mean.

    Outcome reward on the last valid token (plus ``−kl_coef · k`` per token when
    ``kl_coef > 0``, the InstructGPT KL-in-reward); no advantage whitening. The
    value loss is separate. ``dual_clip_c`` switches to dual-clip PPO.

    Batch: ``mask [B, T], rewards [B], old_logp [B, T], values [B, T]`` (+ ``ref_logp [B, T]`` with KL).
    """
    st = (
        part("dual_clip", eps_low=eps, eps_high=eps, c_dual=dual_clip_c)
        if dual_clip_c
        else part("ppo_clip", eps_low=eps, eps_high=eps),
    )
    kl = KLPenalty(kl_coef, kl_kind, "reward") if kl_coef else None
    return Recipe(
        "ppo",
        (Term("pg", rollout=_rl(st, "behaviour", part("gae", gamma=gamma, lam=lam)), kl=kl),),
        "Schulman et al. 2017",
        "mask [B, T], rewards [B], old_logp [B, T], values [B, T]",
    )


def grpo(
    eps: float = 0.2, kl_coef: float = 0.0, kl_kind: str = "k3", std_eps: float = 1e-6, std_ddof: int = 0
) -> Recipe:
    """GRPO (Shao et al. 2024): group-normalised advantage, PPO clip, seq-mean-token-mean.

    Optional KL to the reference model in the loss (``β · k3`` inside the
    per-sequence token mean, as in DeepSeekMath).
    ``std_eps``, ``std_ddof``: the ``ε`` and degrees of freedom of the group reward std
    (``ddof=0``: population std, as the paper; 1: Bessel's, as ``torch.std``).

    Batch: ``mask [B, T], rewards [B], old_logp [B, T]`` (+ ``ref_logp [B, T]`` with KL); ``group_size = G``.
    """
    kl = KLPenalty(kl_coef, kl_kind, "loss") if kl_coef else None
    return Recipe(
        "grpo",
        (
            Term(
                "pg",
                rollout=_rl(
                    (part("ppo_clip", eps_low=eps, eps_high=eps),),
                    "behaviour",
                    group_norm(std_eps, std_ddof),
                    "seq-mean-token-mean",
                ),
                kl=kl,
            ),
        ),
        "Shao et al. 2024",
        "mask [B, T], rewards [B], old_logp [B, T]; groups",
    )


def dr_grpo(eps: float = 0.2, max_len: int | None = None) -> Recipe:
    """Dr.GRPO (Liu et al. 2025): ``Â = r − mean_g``, PPO clip, token sum / constant ``L``.

    ``max_len=None`` uses ``L = T`` (the padded length).

    Batch: ``mask [B, T], rewards [B], old_logp [B, T]``; groups.
    """
    return Recipe(
        "dr_grpo",
        (
            Term(
                "pg",
                rollout=_rl(
                    (part("ppo_clip", eps_low=eps, eps_high=eps),),
                    "behaviour",
                    part("dr_grpo"),
                    "seq-mean-token-sum-norm",
                    max_len=max_len,
                ),
            ),
        ),
        "Liu et al. 2025",
        "mask [B, T], rewards [B], old_logp [B, T]; groups",
    )


def dapo(
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    dynamic_sampling: bool = False,
    std_eps: float = 1e-6,
    std_ddof: int = 0,
) -> Recipe:
    """DAPO (Yu et al. 2025): clip-higher, token-mean, group-normalised advantage.

    ``dynamic_sampling=True`` drops groups whose rewards are all equal (from the
    sum and the denominator) instead of over-sampling.
    ``std_eps``, ``std_ddof``: the ``ε`` and degrees of freedom of the group reward std
    (``ddof=0``: population std, as the paper; 1: Bessel's, as ``torch.std``).

    Batch: ``mask [B, T], rewards [B], old_logp [B, T]``; groups.
    """
    p = _rl((part("ppo_clip", eps_low=eps_low, eps_high=eps_high),), "behaviour", group_norm(std_eps, std_ddof))
    if dynamic_sampling:
        p = Parts(p.stabiliser, p.reference, p.advantage, p.aggregation, part("nonzero_variance"))
    return Recipe(
        "dapo", (Term("pg", rollout=p),), "Yu et al. 2025", "mask [B, T], rewards [B], old_logp [B, T]; groups"
    )


def gspo(eps_low: float = 3e-4, eps_high: float = 4e-4, std_eps: float = 1e-6, std_ddof: int = 0) -> Recipe:
    """GSPO (Zheng et al. 2025): sequence ratio ``s_i``, sequence clip, one term per sequence.

    ``π_ref`` is GSPO's length-normalised sequence reference (value ``s_i``,
    gradient ``s_i ∇log π``), aggregation seq-mean-token-mean (the token mean is
    the ``1/|y_i|`` of ``∇ log s_i``). With token-level advantages this is GSPO-token.
    ``std_eps``, ``std_ddof``: the ``ε`` and degrees of freedom of the group reward std
    (``ddof=0``: population std, as the paper; 1: Bessel's, as ``torch.std``).

    Batch: ``mask [B, T], rewards [B], old_logp [B, T]``; groups.
    """
    return Recipe(
        "gspo",
        (
            Term(
                "pg",
                rollout=_rl(
                    (part("gspo_clip", eps_low=eps_low, eps_high=eps_high),),
                    "gspo",
                    group_norm(std_eps, std_ddof),
                    "seq-mean-token-mean",
                ),
            ),
        ),
        "Zheng et al. 2025",
        "mask [B, T], rewards [B], old_logp [B, T]; groups",
    )


def cispo(eps_low: float = 1e9, eps_high: float = 0.28, std_eps: float = 1e-6, std_ddof: int = 0) -> Recipe:
    """CISPO (MiniMax-M1, 2025): ``sg(clip(r)) Â ∇log π`` — weight clipped, gradient kept.
    ``std_eps``, ``std_ddof``: the ``ε`` and degrees of freedom of the group reward std
    (``ddof=0``: population std, as the paper; 1: Bessel's, as ``torch.std``).

    Batch: ``mask [B, T], rewards [B], old_logp [B, T]``; groups.
    """
    return Recipe(
        "cispo",
        (
            Term(
                "pg",
                rollout=_rl(
                    (part("cispo", eps_low=eps_low, eps_high=eps_high),), "current", group_norm(std_eps, std_ddof)
                ),
            ),
        ),
        "MiniMax 2025",
        "mask [B, T], rewards [B], old_logp [B, T]; groups",
    )


def rloo() -> Recipe:
    """RLOO (Ahmadian et al. 2024, Eq. 6): per-sequence REINFORCE with a leave-one-out baseline.

    ``L = −(1/B) Σ_i (r_i − mean_{j≠i} r_j) log π_θ(y_i)``, ``log π_θ(y_i) = Σ_t log π_θ(o_{i,t})``:
    ∇log π (no ratio, no clip), token sum per sequence, mean over sequences. (`new.rloo_ppo` is
    the PPO-clipped, token-mean form this recipe had before.)

    Batch: ``mask [B, T], rewards [B]``; groups.
    """
    return Recipe(
        "rloo",
        (Term("pg", rollout=_rl(_NONE, "current", part("rloo"), "seq-mean-token-sum")),),
        "Ahmadian et al. 2024",
        "mask [B, T], rewards [B]; groups",
    )


def reinforce_pp(eps: float = 0.2, baseline: bool = True, kl_coef: float = 0.0, kl_kind: str = "k1") -> Recipe:
    """REINFORCE++ (Hu 2025): batch-whitened advantages, PPO clip, token-mean.

    ``baseline=True`` (default) is REINFORCE++-baseline: ``r − mean_g`` whitened
    over the batch's valid tokens. ``baseline=False`` is plain REINFORCE++: the
    return-to-go of token rewards with the ``k1`` KL folded in
    (``kl_coef``), whitened.

    Batch: ``mask [B, T], rewards [B], old_logp [B, T]`` (+ ``ref_logp [B, T]`` with KL); groups for the baseline form.
    """
    if baseline:
        a, kl = part("reinforce_pp_baseline", eps=1e-8), None
    else:
        a = part("reinforce_pp", eps=1e-8)
        kl = KLPenalty(kl_coef, kl_kind, "reward") if kl_coef else None
    return Recipe(
        "reinforce_pp",
        (Term("pg", rollout=_rl((part("ppo_clip", eps_low=eps, eps_high=eps),), "behaviour", a), kl=kl),),
        "Hu 2025",
        "mask [B, T], rewards [B], old_logp [B, T]",
    )


def remax() -> Recipe:
    """ReMax (Li et al. 2024): ``Â = r − r(greedy)``, ∇log π, token-mean.

    Batch: ``mask [B, T], rewards [B], baseline_rewards [B]``.
    """
    return Recipe(
        "remax",
        (Term("pg", rollout=_rl(_NONE, "current", part("remax"))),),
        "Li et al. 2024",
        "mask [B, T], rewards [B], baseline_rewards [B]",
    )


def grpo_process(eps: float = 0.2, std_eps: float = 1e-6, std_ddof: int = 0) -> Recipe:
    """GRPO with process supervision (Shao et al. 2024, §4.1.3): per-step PRM rewards placed at
    step ends, normalised over the group's steps; ``Â_t`` = sum of the normalised rewards of the
    steps ending at or after ``t``; PPO clip, seq-mean-token-mean as GRPO. ``std_eps``,
    ``std_ddof``: the ``ε`` and degrees of freedom of the std over the group's steps.

    Batch: ``mask [B, T], old_logp [B, T], step_rewards [B, T], step_mask [B, T]``; groups.
    """
    return Recipe(
        "grpo_process",
        (
            Term(
                "pg",
                rollout=_rl(
                    (part("ppo_clip", eps_low=eps, eps_high=eps),),
                    "behaviour",
                    part("process", eps=std_eps, ddof=std_ddof or None),
                    "seq-mean-token-mean",
                ),
            ),
        ),
        "Shao et al. 2024 (process supervision)",
        "mask [B, T], old_logp [B, T], step_rewards [B, T], step_mask [B, T]; groups",
    )


def rft(threshold: float = 0.5) -> Recipe:
    """Online rejection-sampling fine-tuning (RFT; Yuan et al. 2023, Zelikman et al. 2022):
    SFT on the policy's own verified-correct rollouts.

    ``Â ≡ 1``, ``π_ref = π_θ`` (∇log π), token-mean over the tokens of rollouts whose reward
    exceeds ``threshold`` (the ``correct`` gate removes the others from the sum and the
    denominator): ``L = −Σ_{i: r_i > τ} Σ_t log π(o_{i,t}) / Σ_{i: r_i > τ} |o_i|``.

    Batch: ``mask [B, T], rewards [B]``.
    """
    sf = _rl(_NONE, "current", part("one"))
    return Recipe(
        "rft",
        (
            Term(
                "sft",
                rollout=Parts(
                    sf.stabiliser, sf.reference, sf.advantage, sf.aggregation, part("correct", threshold=threshold)
                ),
            ),
        ),
        "Yuan et al. 2023; Zelikman et al. 2022",
        "mask [B, T], rewards [B]",
    )
