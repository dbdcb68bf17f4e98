"""The method comparison on the testbed (issue #17): SFT, GRPO (and its SFT control), SFT→GRPO,
LUFFY, SRFT and HPT, each from the shipped ``arith_hint`` base model (`upt_jax.bases`; no base
training), evaluated on the same questions as the base, with paired differences and their SEs.

    upt train --config experiments/testbed.py                  # full: 3 seeds, every arm
    upt train --config experiments/testbed.py:demo             # `make demo`: GRPO, its SFT control, SFT
    upt train --config experiments/testbed.py:ablations        # HPT's γ, offline-signal, released-code ablations
    upt train --config experiments/testbed.py:sft_tier         # SFT alone at 240 steps, 256 questions per tier
    upt train --config experiments/testbed.py --config.seeds="(0,1,2,3,4)"
    upt train --config experiments/testbed.py:countdown        # family B (countdown), family A's settings
    python -m experiments.testbed_sweep RUN_DIR                # the per-method learning-rate sweep

The family's tiers (`upt_jax.data.hinted`) play fixed roles: ``hadd_2``, ``hadd_3`` are solved by
the base (``base``); ``hmul_2x1`` is intermediate at T = 1 by construction (``rl``: 40 % of its
corpus demonstrations slip, a verifier's reward can remove the slips); ``hsub_3`` has pass@64 = 0
at base (``sft``: a new operation on the corpus's labels, only its demonstrations can teach it);
``hadd_4``, ``hmul_3x1``, ``hadd_6``, ``hmul_4x1`` are never trained on (``ood``: more columns than
the corpus; ``hadd_4`` was the SFT tier until SFT on it was found to blur the solved tiers, see
docs/testbed.md). What each arm trains on (a tier named twice is drawn
twice as often, `upt_jax.data.tasks.TierSource`):

* GRPO: `RL_MIX`, the RL tier with the base tiers replayed in the batch (the pilots of issue #17:
  without replay the solved tiers fell 32 points);
* SFT (and the SFT stage of SFT→GRPO): `SFT_MIX`, the SFT tier's demonstrations with 75 % replay of
  the corpus's tiers;
* the hybrids (LUFFY, SRFT, HPT) and the GRPO stage of SFT→GRPO: `HYBRID_MIX`, the RL tier, the SFT
  tiers (with their demonstrations) and the base tiers;
* GRPO's SFT control: `RL_MIX`'s questions, in the same order, learned from their demonstrations.

Every arm gets the same steps and questions per step, and the same schedule: a constant rate, then a
linear cool-down to 0 over the last ``budget.decay_frac`` of its steps (as the base's pre-training
ended; SFT at a constant rate leaves the solved tiers blurred at T = 1, docs/testbed.md). SFT stages
train on ``n`` times as many demonstrations per step (as many sequences per update as an RL step
has rollouts). Learning rates
are per method (`METHODS`), chosen by `experiments/testbed_sweep.py` on a validation split.
Evaluation: avg@k at T = 1 (the rollout temperature) on every tier, ``eval.base_k`` samples per
question for the base; outputs as `upt_jax.studies.comparison`
(``summary.json``: each arm's paired difference against the base per tier and group).
"""

import functools
import os

import ml_collections

from upt_jax.data import tasks

FAMILY = "arith_hint"  # family A: the sweep's; `testbed.py:countdown` runs family B with A's settings
TITLES = dict(arith_hint="the index-hinted arithmetic testbed", countdown="the countdown testbed")
FAMILIES = tuple(TITLES)


def layout(family: str = FAMILY) -> dict[str, tuple[str, ...]]:
    """A family's tiers by level and the comparison's mixes of them (a tier named twice is drawn
    twice as often): ``base``, ``rl``, ``sft``, ``ood`` (every held-out tier: the family's ``ood``
    and ``ext`` levels), ``id`` (the tiers trained on), and
    ``rl_mix`` (50 % RL tier, 50 % replay), ``sft_mix`` (25 % new, 75 % replay), ``hybrid_mix``
    (RL tier, SFT tiers and base tiers, a third each)."""
    fam = tasks.get_task(family)
    base, rl, sft, ood = (fam.tiers_at(*levels) for levels in (("base",), ("rl",), ("sft",), ("ood", "ext")))
    return dict(
        base=base,
        rl=rl,
        sft=sft,
        ood=ood,
        id=base + rl + sft,
        rl_mix=rl * 2 + base,
        sft_mix=sft + base + rl,
        hybrid_mix=rl * 2 + sft + base,
    )


_A = layout(FAMILY)
BASE_TIERS, RL_TIERS, SFT_TIERS, OOD_TIERS, ID_TIERS = (_A[k] for k in ("base", "rl", "sft", "ood", "id"))
RL_MIX, SFT_MIX, HYBRID_MIX = _A["rl_mix"], _A["sft_mix"], _A["hybrid_mix"]

# per method: the learning rate chosen by `experiments/testbed_sweep.py` on the validation split
# (the best paired difference on ``ID avg``, seed 0, 120 steps; docs/testbed.md "The sweep"), and the
# grid it tried. Every best rate is inside its grid: SFT and GRPO were best at the top of their
# first grids, which were then extended by one point (`--rates`), and both fell off there.
METHODS = dict(
    sft=dict(learning_rate=3e-3, grid=(3e-4, 1e-3, 3e-3, 1e-2)),
    grpo=dict(learning_rate=8e-5, grid=(2e-5, 4e-5, 8e-5, 1.6e-4)),
    luffy=dict(learning_rate=3e-4, grid=(1e-4, 3e-4, 1e-3, 3e-3)),
    # SRFT: 1e-3 on arith_hint forgets on countdown (cd_2 -24.7 +/- 8.9); countdown's own validation
    # sweep (rates 1e-4 / 3e-4 / 1e-3 at rl_coef 0.1 and 1.0, and 0.3 at 1e-4; docs/testbed.md) found none that
    # beats the base; its best ID avg (-1.2 +/- 1.3) is 1e-4 with rl_coef 1.0
    srft=dict(
        learning_rate=1e-3,
        grid=(1e-4, 3e-4, 1e-3, 3e-3),
        by_family=dict(countdown=dict(learning_rate=1e-4, hparams=dict(rl_coef=1.0))),
    ),
    # HPT: rate and SFT-term coefficient chosen together (`testbed_sweep --joint`, docs/testbed.md "The
    # joint sweep of HPT's rate and SFT coefficient"): the rate grid ran at the default 1.0, the
    # coefficients at 1e-4, 3e-4 and 1e-3 (and 0.003 at 3e-4, the grid's edge extended by one point)
    hpt=dict(
        learning_rate=3e-4,
        grid=(1e-4, 3e-4, 1e-3, 3e-3),
        hparams=dict(sft_loss_coef=0.01),
        hparam_grid=dict(sft_loss_coef=(0.003, 0.01, 0.03, 0.1, 0.3, 1.0)),
    ),
)
VARIANTS = ("full", "demo", "ablations", "sft_tier", "smoke")
MAIN = ("base", "sft", "grpo", "sft_then_grpo", "luffy", "srft", "hpt")
# GRPO's SFT control learns from 8 demonstrations per step (GRPO's questions), not SFT's 64: the
# pilots' rate for that batch (3e-4: +13.5 points on the RL tier, solved tiers unchanged)
SFT_CONTROL_RATE = 3e-4


def _sft_stage(c, tiers=None) -> dict:
    """An SFT stage: its mix (default the family's ``sft_mix``), SFT's rate, n × questions_per_step
    demonstrations per step."""
    return dict(
        tiers=tuple(tiers or layout(c.family)["sft_mix"]),
        learning_rate=chosen("sft", c.family)["learning_rate"],
        questions_per_step=int(c.budget.questions_per_step) * int(c.budget.n),
    )


def chosen(method: str, family: str = FAMILY) -> dict:
    """``{"learning_rate", "hparams"}`` of ``method`` on ``family``: `METHODS`' choice (swept on
    family A), or its ``by_family`` entry where the family's own validation sweep chose otherwise."""
    m = METHODS[method]
    own = m.get("by_family", {}).get(family, {})
    return dict(
        learning_rate=own.get("learning_rate", m["learning_rate"]),
        hparams={**m.get("hparams", {}), **own.get("hparams", {})},
    )


def _arm(label, module, arg="", *, method, tiers, hparams=None, swept=True, family=FAMILY, **extra):
    """An arm of ``method`` at its chosen rate on ``family``; with ``swept`` its chosen
    hyperparameters (`chosen`) under ``hparams``."""
    pick = chosen(method, family)
    return dict(
        label=label,
        module=module,
        arg=arg,
        hparams={**(pick["hparams"] if swept else {}), **dict(hparams or {})},
        overrides=(),
        seeds=(),
        tiers=tuple(tiers),
        learning_rate=pick["learning_rate"],
        **extra,
    )


def arms(c, *, swept: bool = True) -> dict:
    """The arms of the full comparison (``c.budget`` sets the SFT stages' demonstrations per step);
    ``swept=False``: without the hyperparameters the sweep chose beyond the rate (the rate sweep's arms)."""
    sft, lay = _sft_stage(c), layout(c.family)
    SFT_MIX, RL_MIX, HYBRID_MIX = lay["sft_mix"], lay["rl_mix"], lay["hybrid_mix"]  # noqa: N806
    arm = functools.partial(_arm, swept=swept, family=c.family)
    return dict(
        sft=dict(arm("SFT", "sft", method="sft", tiers=SFT_MIX), questions_per_step=sft["questions_per_step"]),
        grpo=arm(
            "GRPO",
            "grpo",
            method="grpo",
            tiers=RL_MIX,
            sft_control=dict(learning_rate=SFT_CONTROL_RATE, label="SFT control (GRPO's questions)"),
        ),
        sft_then_grpo=arm("SFT→GRPO", "sft_then_grpo", method="grpo", tiers=HYBRID_MIX, stages=dict(sft=sft)),
        luffy=arm("LUFFY", "luffy", method="luffy", tiers=HYBRID_MIX),
        srft=arm("SRFT", "srft", method="srft", tiers=HYBRID_MIX),
        hpt=arm("HPT", "hpt", method="hpt", tiers=HYBRID_MIX, hparams=dict(gamma=0.0)),
    )


def ablation_arms(tiers: tuple[str, ...] = HYBRID_MIX) -> dict:
    """The HPT paper's ablations, each an HPT arm at HPT's rate on ``tiers``, the hybrids' mix (the main HPT arm,
    γ = 0 with the paper text's SFT signal, is their reference): the gate threshold γ (n = 8, so
    P ∈ {0, 1/8, …}), what an SFT-routed question learns from its demonstration (off-policy RL as
    LUFFY's term, or SFT and that together) and the authors' released code (`upge.recipes.hpt`)."""
    hpt = lambda label, arg="", **hp: _arm(label, "hpt", arg, method="hpt", tiers=tiers, hparams=hp)  # noqa: E731
    return dict(
        hpt_gamma_1of8=hpt("HPT γ=1/8", gamma=0.125),
        hpt_gamma_2of8=hpt("HPT γ=2/8", gamma=0.25),
        hpt_offline_rl=hpt("HPT, demo by off-policy RL", gamma=0.0, offline="rl"),
        hpt_offline_both=hpt("HPT, demo by SFT + off-policy RL", gamma=0.0, offline="both"),
        hpt_released_code=hpt("HPT (released code)", "released_code", gamma=0.0),
    )


ABLATION_TABLES = (
    ("Gate ablation (γ with n = 8)", ("base", "hpt", "hpt_gamma_1of8", "hpt_gamma_2of8")),
    ("Offline-signal ablation", ("base", "hpt", "hpt_offline_rl", "hpt_offline_both")),
    ("HPT: paper text vs released code", ("base", "hpt", "hpt_released_code")),
)


def keep_arms(c, *keys: str) -> None:
    """Keep only the arms ``keys`` of ``c`` (a variant's subset of the full comparison)."""
    for key in [k for k in c.arms if k not in keys]:
        del c.arms[key]


def set_run_dir(c, run_dir: str):
    """``c.run_dir = run_dir``, and a base model trained for the comparison (the smoke variant's)
    moves with it (a shipped base stays where it is)."""
    if c.base.get("module"):
        c.base.run_dir = os.path.join(run_dir, "base")
    c.run_dir = run_dir
    return c


def parse_arg(arg: str | None) -> tuple[str, str]:
    """``"VARIANT"``, ``"FAMILY"`` or ``"VARIANT,FAMILY"`` (e.g. ``demo,countdown``) → (variant, family);
    the defaults are ``full`` and `FAMILY`."""
    variant, family = "full", FAMILY
    for token in filter(None, (arg or "").split(",")):
        if token in VARIANTS:
            variant = token
        elif token in FAMILIES:
            family = token
        else:
            raise ValueError(
                f"experiments/testbed.py: {token!r} is neither a variant ({', '.join(VARIANTS)}) "
                f"nor a family ({', '.join(FAMILIES)})"
            )
    return variant, family


def get_config(arg: str | None = None):
    variant, family = parse_arg(arg)
    from upt_jax import bases

    lay = layout(family)
    BASE_TIERS, RL_TIERS, SFT_TIERS, OOD_TIERS, ID_TIERS = (  # noqa: N806
        lay[k] for k in ("base", "rl", "sft", "ood", "id")
    )
    c = ml_collections.ConfigDict()
    c.mode = "comparison"
    c.family = family
    suffix = "" if family == FAMILY else f"_{family}"
    c.name = f"testbed{suffix}_{variant}"
    c.title = f"SFT, GRPO, SFT→GRPO, LUFFY, SRFT and HPT on {TITLES[family]}"
    c.run_dir = f"runs/testbed{suffix}_{variant}" if variant != "full" else f"runs/testbed{suffix}"
    c.progress = True
    c.only_arms = ()  # e.g. --config.only_arms=luffy,srft,hpt: one process's share (comparison.only_arms)
    c.plot_smooth = 5
    c.seeds = (0, 1, 2)
    if variant != "smoke":  # the smoke variant trains its own tiny base (below)
        c.base = ml_collections.ConfigDict(
            dict(run_dir=bases.base_dir(family), label="base model (shipped)"), type_safe=False
        )
    # what every arm gets; the learning rate here is only a default (each arm sets its method's)
    # steps: the full comparison's time on 2 cores is estimated at about 75 min (docs/testbed.md)
    c.budget = ml_collections.ConfigDict(
        dict(
            steps=120,
            questions_per_step=8,
            n=8,
            max_new_tokens=192,
            temperature=1.0,
            learning_rate=4e-5,
            decay_frac=0.5,
        )
    )
    c.eval = ml_collections.ConfigDict(
        dict(
            id_tiers=ID_TIERS,
            groups=(
                ("base tiers", BASE_TIERS),
                ("RL tier", RL_TIERS),
                ("SFT tiers", SFT_TIERS),
                ("OOD avg", OOD_TIERS),
            ),
            # 256 questions per tier: at 64 the SE of a tier's paired difference reached 4.5 points
            # (SFT on hsub_3), over the 3; sft_tier's 256 gave 2.9 (docs/testbed.md)
            n_per_tier=256,
            k=4,
            base_k=16,
            temperature=1.0,
            max_new_tokens=256,
            seed=1_000_003,
        ),
        type_safe=False,
    )
    c.curves = ml_collections.ConfigDict(
        dict(arms=("sft", "grpo", "grpo_sft_control", "hpt"), points=3, tiers=ID_TIERS, n_per_tier=32, k=2)
    )
    c.passk = ml_collections.ConfigDict(
        dict(arms=("base", "sft", "sft_then_grpo", "hpt"), k=16, tiers=SFT_TIERS, n_per_tier=16)
    )
    c.arms = ml_collections.ConfigDict(arms(c), type_safe=False)
    c.tables = (("Main table (cf. the HPT paper's Table 2)", MAIN),)
    c.paired_against = ("hpt", ("sft", "grpo", "sft_then_grpo", "luffy", "srft"))

    if variant == "demo":  # `make demo`: the two effects the testbed is built to show, one seed
        c.seeds = (0,)
        # the full budget (SFT needs its 120 steps: at 60 the solved tiers are still blurred)
        keep_arms(c, "sft", "grpo")
        c.tables = (("Main table", ("base", "sft", "grpo")),)
        c.paired_against = ()
        c.eval.n_per_tier, c.eval.k, c.eval.base_k = 48, 4, 16
        c.curves.arms = ()
        c.passk.arms = ()
    if variant == "ablations":  # HPT and its ablations, same budget, mix, rate and evaluation as `full`
        keep_arms(c, "hpt")
        ablations = ablation_arms(tuple(c.arms.hpt.tiers))
        for key, arm in ablations.items():
            c.arms[key] = ml_collections.ConfigDict(arm, type_safe=False)
        c.title = f"HPT's ablations on {TITLES[family]}"
        c.tables = ABLATION_TABLES
        c.paired_against = ("hpt", tuple(ablations))
        c.curves.arms = ("hpt", "hpt_released_code")
        c.passk.arms = ()
    if variant == "sft_tier":  # criterion (b) of issue #17: SFT alone, twice the budget, 256 questions
        # the full comparison's SFT arm reaches 27.7 % on hsub_3 at 120 steps, the same on every seed
        # (26.6 / 28.9 / 27.7) and still rising; its SE (4.5) is the 64 questions' (docs/testbed.md)
        c.budget.steps = 240
        keep_arms(c, "sft")
        c.title = f"SFT at twice the comparison's budget on {TITLES[family]}"
        c.tables = (("SFT at twice the comparison's budget", ("base", "sft")),)
        c.paired_against = ()
        c.eval.groups = tuple(g for g in c.eval.groups if g[0] != "OOD avg")
        c.eval.n_per_tier, c.eval.k, c.eval.base_k = 256, 4, 8
        c.curves.arms = ("sft",)
        c.curves.points = 4
        c.passk.arms = ()
    if variant == "smoke":  # the test suite: every code path in seconds, from a random tiny base
        c.seeds = (0, 1)
        c.base = ml_collections.ConfigDict(
            dict(
                run_dir=f"{c.run_dir}/base",
                module="pretrain_hint" if family == FAMILY else f"pretrain_{family}",
                arg="",
                train_if_missing=True,
                label="base model",
                overrides=(
                    ("train.steps", 2),
                    ("train.questions_per_step", 8),
                    ("data.corpus.n_docs", 32),
                    ("checkpoint.every", 2),
                    (
                        "model.overrides",
                        dict(
                            num_layers=1, hidden_size=32, intermediate_size=64, num_heads=2, num_kv_heads=1, head_dim=16
                        ),
                    ),
                ),
            ),
            type_safe=False,
        )
        # 8 questions × 2 rollouts (+ 1 demonstration): rows split over the test suite's 8 CPU devices
        c.budget = ml_collections.ConfigDict(
            dict(steps=2, questions_per_step=8, n=2, max_new_tokens=8, temperature=1.0, learning_rate=1e-3)
        )
        c.arms = ml_collections.ConfigDict(arms(c), type_safe=False)
        keep_arms(c, "sft", "grpo", "hpt")
        c.arms.sft.seeds = c.arms.hpt.seeds = (0,)  # GRPO and its control: both seeds
        c.eval.update(
            dict(
                n_per_tier=3,
                k=2,
                base_k=3,
                max_new_tokens=8,
                groups=(("RL tier", RL_TIERS), ("OOD avg", OOD_TIERS[:1])),
            )
        )
        c.eval.id_tiers = BASE_TIERS[:1] + RL_TIERS + SFT_TIERS[:1]
        c.curves = ml_collections.ConfigDict(
            dict(arms=("grpo",), points=2, tiers=RL_TIERS + SFT_TIERS[:1], n_per_tier=2, k=1)
        )
        c.passk = ml_collections.ConfigDict(dict(arms=("base", "hpt"), k=2, tiers=SFT_TIERS[:1], n_per_tier=2))
        c.tables = (("Main", ("base", "sft", "grpo", "hpt")),)
        c.paired_against = ("hpt", ("sft", "grpo"))
        c.progress = False
    return c
