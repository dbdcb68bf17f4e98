"""Learning checks (issue #22): for each regime, a short run from the testbed's shipped base model
and the metric the regime exists to move, as a paired difference against its starting model on
the same held-out questions, over several training seeds, with a bootstrap SE.

A check is data (`Check`): the ``experiments/`` module and argument that define the regime, what
it trains on, its learning rate and budget, and which metric it is judged by (`METRICS`). The
runner (`upt_jax.studies.learning_run`) builds each seed's training config with the comparison's
`upt_jax.studies.comparison.arm_config` (so a check trains exactly as a comparison arm would),
prepares what a regime needs from the base model (its own preference pairs, a perturbed student,
a reward model), trains, measures, and writes ``results.json`` and the table of docs/learning.md:

    python -m benchmarks.learning RUN_DIR [--only grpo,dpo] [--seeds 3]

The testbed (`docs/testbed.md`): ``arith_hint``'s base tiers (``hadd_2``, ``hadd_3``) are solved by
the base; its RL tier ``hmul_2x1`` is right about 63 % of the time at T = 1 (greedy 98 %): the tier
every accuracy check targets. Training data is the RL tier with the base tiers replayed (`RL_MIX`,
as the testbed's GRPO arm). SFT-style checks (SFT, STaR, the hybrids' demonstrations) use the RL
tier's demonstrations, not the SFT tiers': SFT at 3e-4 on those raises the sampling entropy and the
solved tiers collapse at T = 1 within 60 steps (docs/testbed.md), which a short check cannot separate
from the regime's own effect.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from upt_jax.data import tasks

__all__ = [
    "FAMILY",
    "BASE_TIERS",
    "RL_TIERS",
    "RL_MIX",
    "METRICS",
    "Check",
    "CHECKS",
    "target_tier",
    "solved_tiers",
    "pairs_dir",
    "accuracy_metric",
    "token_budget",
    "Scale",
    "FULL",
    "SMOKE",
    "checks",
    "study_config",
]

FAMILY = "arith_hint"
BASE_TIERS = tasks.get_task(FAMILY).tiers_at("base")
RL_TIERS = tasks.get_task(FAMILY).tiers_at("rl")
RL_MIX = RL_TIERS * 2 + BASE_TIERS  # 50 % RL tier, 50 % replay of the solved tiers (experiments/testbed.py)

# metric kind -> what the table's first row of the check reports (`learning_run.measure`)
METRICS = {
    "accuracy": "RL-tier accuracy (hmul_2x1, avg@k at T = 1)",
    "preference": "held-out preference accuracy (implicit reward, chosen > rejected)",
    "margin": "held-out implicit-reward margin (chosen − rejected)",
    "distill": "forward KL to the teacher on held-out demonstrations (nats/token)",
    "reward_model": "held-out pair accuracy (chosen scored above rejected)",
    "prm": "held-out step-label accuracy",
    "rlhf": "learned reward of the policy's samples (held-out prompts; in SDs of its reward model's scores of the base's)",
}


@dataclasses.dataclass(frozen=True)
class Check:
    """One regime's learning check.

    Attributes:
      key: the check's name (``--only``) and run sub-directory.
      label: how the table names it.
      module, arg: the ``experiments/<module>.py`` config (and its argument) that defines the regime.
      metric: a key of `METRICS`: what the regime exists to move.
      learning_rate, steps, questions_per_step, n: the budget (``n``: rollouts per question).
      tiers: what it trains on (a tier named twice is drawn twice as often).
      hparams: recipe hyper-parameters over the module's.
      overrides: ``((dotted config key, value), …)`` over the module's config.
      data: what the runner prepares first: ``pairs`` (preference pairs from the base model's own
        correct and incorrect samples on the RL tier), ``kto`` (the same pairs as labelled rows),
        ``student`` (the base with its weights perturbed; the base is the teacher), ``reward_model``
        (the ``reward_model`` check's run of the same seed, trained first when missing).
      noise: the ``student``'s relative weight perturbation (None: the `Scale`'s).
      note: why the budget is what it is, or what the row shows.
      family: the task family (`upt_jax.data.tasks`) whose shipped base (`upt_jax.bases`) it starts
        from and whose tiers it is judged on.
      target: the tier it targets (its preference pairs, accuracy, held-out items; None: the
        family's RL tier); the family's base tiers are the guards.
      max_new_tokens: the rollout and evaluation budget (None: the `Scale`'s).
    """

    key: str
    label: str
    module: str
    arg: str = ""
    metric: str = "accuracy"
    learning_rate: float = 4e-5
    steps: int = 30
    questions_per_step: int = 8
    n: int = 8
    tiers: tuple[str, ...] = RL_MIX
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    overrides: tuple[tuple[str, Any], ...] = ()
    data: str = ""
    noise: float | None = None
    note: str = ""
    family: str = FAMILY
    target: str | None = None
    max_new_tokens: int | None = None

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ValueError(f"check {self.key}: metric {self.metric!r} is not one of {tuple(METRICS)}")
        if self.data not in ("", "pairs", "kto", "student", "reward_model"):
            raise ValueError(f"check {self.key}: data {self.data!r}: pairs, kto, student or reward_model")
        family = tasks.get_task(self.family)  # a clear error for an unknown family
        if self.target is not None and self.target not in family.tier_names:
            raise ValueError(f"check {self.key}: target {self.target!r} is no tier of {self.family}")


def target_tier(check: Check) -> str:
    """The tier ``check`` targets: its ``target``, else its family's RL tier."""
    return check.target or tasks.get_task(check.family).tiers_at("rl")[0]


def solved_tiers(check: Check) -> tuple[str, ...]:
    """The guards: ``check``'s family's base tiers (solved by its shipped base)."""
    return tuple(tasks.get_task(check.family).tiers_at("base"))


def _targets_default(check: Check) -> bool:
    """Whether ``check`` targets the default family's RL tier (the study's shared pairs and rows)."""
    return (check.family, target_tier(check)) == (FAMILY, RL_TIERS[0])


def pairs_dir(check: Check, run_dir: str) -> str:
    """Where ``check``'s preference pairs live: ``<run_dir>/pairs`` for the default family's RL tier
    (shared by DPO, IPO, KTO and the reward model), ``<run_dir>/pairs_<tier>`` for another target."""
    return os.path.join(run_dir, "pairs" if _targets_default(check) else f"pairs_{target_tier(check)}")


def accuracy_metric(check: Check) -> str:
    """The accuracy row's name: `METRICS`'s for the default RL tier, else the targeted tier's."""
    if _targets_default(check):
        return METRICS["accuracy"]
    return f"targeted-tier accuracy ({check.family} {target_tier(check)}, avg@k at T = 1)"


def token_budget(check: Check, scale: "Scale") -> int:
    """The check's rollout and evaluation budget, within the scale's cap (the smoke's)."""
    n = check.max_new_tokens or scale.max_new_tokens
    return min(n, scale.token_cap) if scale.token_cap else n


_LORA = (("model.lora.rank", 16), ("model.lora.alpha", 32.0))
_PAIRS_NOTE = "pairs: the base's own correct vs incorrect samples on the RL tier"
# SimPO's and ORPO's implicit reward is the mean token log-prob, which needs no training to rank
# arith_hint's RL-tier pairs: the base's wrong samples there are sampling slips, less likely token by
# token, and it ranks 98.7 % of them right (a ceiling, session 12). Countdown's four-number tier
# (held out from its base's corpus, right 8-23 % of the time at T = 1) has wrong searches about as
# likely as right ones: the base ranks 58 % of its pairs right there.
_COUNTDOWN_OOD = dict(family="countdown", target="cd_4", tiers=("cd_4",), max_new_tokens=256)
_REFERENCE_FREE_NOTE = (
    "implicit reward: mean token log-prob (no reference); pairs: the countdown base's own correct vs "
    "incorrect samples on its held-out four-number tier cd_4 (on arith_hint's RL tier the base already "
    "ranks 98.7 % of the pairs right by mean log-prob: a ceiling)"
)

CHECKS: tuple[Check, ...] = (
    Check(
        "sft",
        "SFT",
        "sft",
        learning_rate=3e-4,
        steps=60,
        note="RL-tier demonstrations with replay (not the SFT tiers: docs/testbed.md)",
    ),
    Check("rft", "RFT", "rft", learning_rate=1e-4),
    Check(
        "star",
        "STaR",
        "star",
        learning_rate=3e-4,
        steps=40,
        n=4,
        overrides=(("star.rounds", 1), ("star.questions", 128)),
        note="1 round: 128 questions × 4 samples, SFT from the base on the kept rationales",
    ),
    Check("grpo", "GRPO", "grpo"),
    Check("dr_grpo", "Dr.GRPO", "grpo", "dr_grpo"),
    Check(
        "grpo_lora",
        "GRPO + LoRA (r 16)",
        "grpo",
        learning_rate=4e-4,
        overrides=_LORA,
        note="adapters only; 10× GRPO's rate",
    ),
    Check(
        "ppo",
        "PPO (critic, GAE)",
        "ppo",
        n=4,
        hparams=dict(lam=1.0),
        overrides=(("critic.learning_rate", 1e-3), ("critic.update_epochs", 8)),
        note="GAE λ = 1 (Monte Carlo targets), the critic at 1e-3 and 8 critic updates per step: at λ = 0.95, 1e-4 "
        "and 2 updates (`experiments/ppo.py`'s) 30 steps leave the critic no better than a constant, at 2 updates "
        "it is still learning (docs/learning.md); also its explained variance",
    ),
    Check(
        "dpo", "DPO", "dpo", "dpo", metric="preference", learning_rate=1e-5, steps=60, data="pairs", note=_PAIRS_NOTE
    ),
    Check("ipo", "IPO", "dpo", "ipo", metric="preference", learning_rate=1e-5, steps=60, data="pairs"),
    Check(
        "simpo",
        "SimPO",
        "dpo",
        "simpo",
        metric="preference",
        learning_rate=1e-5,
        steps=60,
        data="pairs",
        note=_REFERENCE_FREE_NOTE,
        **_COUNTDOWN_OOD,
    ),
    Check(
        "orpo",
        "ORPO",
        "dpo",
        "orpo",
        metric="preference",
        learning_rate=1e-5,
        steps=60,
        data="pairs",
        note=_REFERENCE_FREE_NOTE,
        **_COUNTDOWN_OOD,
    ),
    Check("kto", "KTO", "dpo", "kto", metric="preference", learning_rate=1e-5, steps=60, data="kto"),
    Check(
        "distill_fkl",
        "Distillation (forward KL)",
        "distill",
        "fkl",
        metric="distill",
        learning_rate=3e-4,
        steps=40,
        data="student",
        note="student: the base with perturbed weights; teacher: the base",
    ),
    Check(
        "distill_on_policy",
        "On-policy distillation",
        "distill",
        "on_policy",
        metric="distill",
        learning_rate=1e-4,
        n=4,
        data="student",
        noise=0.3,
        note="student: the base perturbed by 0.3 · rms (RL tier 43 % against the teacher's 64 %: its own "
        "samples on the teacher's support; at 1.0 it starts at 0 % and stays there); teacher: the base",
    ),
    Check("luffy", "LUFFY", "luffy", learning_rate=1e-4, n=7),
    Check("srft", "SRFT", "srft", learning_rate=1e-4, n=7),
    Check("hpt", "HPT (γ = 0)", "hpt", learning_rate=1e-4, hparams=dict(gamma=0.0)),
    Check(
        "reward_model",
        "Reward model (Bradley–Terry)",
        "reward_model",
        metric="reward_model",
        learning_rate=1e-3,
        steps=400,
        questions_per_step=16,
        data="pairs",
        note=_PAIRS_NOTE + ", up to 4 per question; pilots (1 seed, 238 held-out pairs): 400 × 16 pairs at "
        "1e-3 → 74.8 % (+16.0 ± 4.4), 1000 × 16 at 3e-4 → 80.3 % (2.5× the time); 150 × 8 on 180 pairs "
        "(one per question) had fit its training pairs and stayed at chance",
    ),
    Check(
        "rlhf_ppo",
        "RLHF-PPO",
        "rlhf_ppo",
        metric="rlhf",
        steps=120,
        n=4,
        tiers=RL_TIERS,
        data="reward_model",
        note="reward: the reward_model check's model (same seed), trained on the RL tier's pairs only, so the "
        "policy trains on that tier alone (no replay: the reward model never saw the solved tiers); also the "
        "verifier's accuracy. 30 steps on the replay mix (session 12): +0.039 ± 0.025 SD, not shown",
    ),
    Check(
        "prm",
        "PRM",
        "prm",
        metric="prm",
        learning_rate=1e-3,
        steps=600,
        questions_per_step=16,
        note="steps labelled from corrupted RL-tier demonstrations (every step right: the majority rule, about 56 %); "
        "pilots (1 seed, 64 questions): 600 × 16 at 1e-3 → 63.5 %, its held-out accuracy still rising; 600 × 32 at "
        "3e-4 slower; 150 × 8 at 1e-3 stayed at the label rate",
    ),
)


@dataclasses.dataclass(frozen=True)
class Scale:
    """How big a study is: ``steps`` (None: each check's own; else every check's), the evaluation
    (``n_eval`` RL-tier questions × ``k`` samples, the base at ``base_k``; ``n_guard`` questions per
    solved tier), ``max_new_tokens`` (a check may set its own; ``token_cap`` caps both), the preference data (``pair_questions`` training and
    ``heldout`` held-out questions × ``pair_k`` base samples, up to ``pairs_per_question`` disjoint
    pairs per training question; the PRM's held-out questions are ``heldout`` too); ``demo_fallback``: a question without a
    correct sample takes its demonstration as the chosen response, counted, for random smoke models),
    ``noise`` (the distillation student's relative weight perturbation) and ``n`` (None: each check's)."""

    steps: int | None = None
    n_eval: int = 64
    k: int = 4
    base_k: int = 4  # = k, with the same sampling key: an unchanged model's Δ is exactly 0 (common random numbers)
    n_guard: int = 32
    max_new_tokens: int = 192
    token_cap: int | None = None  # a cap over every check's own max_new_tokens (the smoke's)
    pair_questions: int = 1536  # hmul_2x1 has 810 distinct questions: ids repeat a question, not its samples
    heldout: int = 256
    pair_k: int = 8
    pairs_per_question: int = 4
    demo_fallback: bool = False
    noise: float = 1.0  # 0.2 left the student within 0.002 nats/token of its teacher: Adam's noise dominated
    n: int | None = None
    star_questions: int | None = None


FULL = Scale()
# the test suite: every code path in seconds (a tiny random base, 8 simulated devices)
SMOKE = Scale(
    steps=1,
    n_eval=3,
    k=2,
    base_k=2,
    n_guard=2,
    max_new_tokens=8,
    token_cap=8,
    pair_questions=16,  # ≥ the reward model's 16 questions per step (each smoke question gives a pair)
    heldout=4,
    pair_k=2,
    demo_fallback=True,
    n=2,
    star_questions=8,
)


def checks(only=None) -> list[Check]:
    """The checks named in ``only`` (names or a comma-separated string, in that order; None: all, in
    `CHECKS`'s order); a name that is no check raises ``KeyError`` listing the known ones."""
    if only is None:
        return list(CHECKS)
    names = [x.strip() for x in (only.split(",") if isinstance(only, str) else only) if x.strip()]
    known = {c.key: c for c in CHECKS}
    unknown = [x for x in names if x not in known]
    if unknown:
        raise KeyError(f"unknown learning checks {unknown}; known: {', '.join(known)}")
    return [known[x] for x in dict.fromkeys(names)]


def study_config(check: Check, run_dir: str, *, base: Mapping[str, Any], seeds, scale: Scale = FULL):
    """The comparison-shaped config of one check (one arm, ``check.key``): what
    `upt_jax.studies.comparison.arm_config` builds each seed's training config from (runs in
    ``<run_dir>/<key>/seed<s>``) and `comparison_eval.evaluate_run` evaluates with (``eval``).
    ``base``: ``{run_dir, [module, arg, overrides, train_if_missing, label]}`` as a comparison's."""
    import ml_collections

    overrides = tuple(check.overrides)
    if scale.star_questions and check.module == "star":
        overrides += (("star.questions", scale.star_questions),)
    c = ml_collections.ConfigDict()
    c.run_dir = run_dir
    c.progress = False
    c.seeds = tuple(int(s) for s in seeds)
    c.base = ml_collections.ConfigDict(dict(base), type_safe=False)
    c.budget = ml_collections.ConfigDict(
        dict(
            steps=int(scale.steps or check.steps),
            questions_per_step=check.questions_per_step,
            n=int(scale.n or check.n),
            max_new_tokens=token_budget(check, scale),
            temperature=1.0,
            learning_rate=check.learning_rate,
        )
    )
    c.eval = ml_collections.ConfigDict(
        dict(
            id_tiers=(target_tier(check),) + solved_tiers(check),
            n_per_tier=scale.n_eval,
            k=scale.k,
            base_k=scale.base_k,
            temperature=1.0,
            max_new_tokens=token_budget(check, scale),
            seed=1_000_003,
        ),
        type_safe=False,
    )
    c.curves = ml_collections.ConfigDict(dict(arms=(), points=1))
    c.arms = ml_collections.ConfigDict(
        {
            check.key: dict(
                label=check.label,
                module=check.module,
                arg=check.arg,
                hparams=dict(check.hparams),
                overrides=overrides,
                seeds=(),
                tiers=tuple(check.tiers),
                learning_rate=check.learning_rate,
            )
        },
        type_safe=False,
    )
    return c
