"""The HPT paper's comparison (Lv et al. 2025, Table 2) at laptop scale, on the synthetic task.

From one tiny base model (`experiments/pretrain_tiny.py`, trained first if missing): SFT,
GRPO, SFT→GRPO, LUFFY, SRFT and HPT with the same budget (update steps, questions per step,
rollouts per question), several seeds, evaluated with avg@k on the training tiers (ID) and
the held-out tiers (OOD); plus the gate ablation (γ = 0, 1/8, 2/8 with n = 8), the
offline-signal ablation (what an SFT-routed question learns from its demonstration: SFT,
off-policy RL, both), HPT's "paper text" vs "released code" variants, pass@k up to 64 for
the base model, GRPO, SFT and HPT, and plots.

    upt train --config experiments/paper_table.py            # the full comparison (3 seeds)
    upt train --config experiments/paper_table.py:demo       # reduced, < 10 min on 2 cores (the former make demo)
    upt train --config experiments/paper_table.py --config.seeds="(0,1,2,3,4)"

Outputs in ``run_dir``: ``REPORT.md`` (the tables), ``results.json`` (every number) and
``plots/``. Everything is resumable: a rerun reuses finished runs and cached evaluations.
The measured tables are in docs/paper_table.md.
"""

import ml_collections

from upt_jax.data import synthetic


def _arm(label, module, arg=None, hparams=None, overrides=None, seeds=None):
    return dict(
        label=label,
        module=module,
        arg=arg or "",
        hparams=dict(hparams or {}),
        overrides=tuple(overrides or ()),
        seeds=tuple(seeds or ()),
    )


ID_TIERS = synthetic.EASY_TIERS + synthetic.MEDIUM_TIERS
ABLATIONS = ("hpt_gamma_1of8", "hpt_gamma_2of8", "hpt_offline_rl", "hpt_offline_both", "hpt_released_code")
MAIN = ("base", "sft", "grpo", "sft_then_grpo", "luffy", "srft", "hpt")


def get_config(arg: str | None = None):
    variant = arg or "full"
    if variant not in ("full", "demo", "smoke"):
        raise ValueError(f"experiments/paper_table.py: variant {variant!r}: full, demo or smoke")
    c = ml_collections.ConfigDict()
    c.mode = "comparison"
    c.name = f"paper_table_{variant}"
    c.title = "SFT, GRPO, SFT→GRPO, LUFFY, SRFT and HPT on the synthetic task"
    c.run_dir = f"runs/paper_table_{variant}" if variant != "full" else "runs/paper_table"
    c.progress = True
    c.plot_smooth = 5
    c.seeds = (0, 1, 2)

    c.base = ml_collections.ConfigDict(
        dict(
            run_dir="runs/pretrain_tiny",
            module="pretrain_tiny",
            arg="",
            train_if_missing=True,
            overrides=(),
            label="base model",
        ),
        type_safe=False,
    )

    # what every arm gets (the paper: same data, steps and rollouts per question for all)
    c.budget = ml_collections.ConfigDict(
        dict(steps=40, questions_per_step=8, n=8, max_new_tokens=192, temperature=0.7, learning_rate=3e-5)
    )

    # trained on easy + medium (demonstrations ≤ 153 characters, so rows fit 24 + 192 columns); the
    # hard tiers (longer operands of the same operations) and the OOD tiers are never trained on
    c.eval = ml_collections.ConfigDict(
        dict(
            id_tiers=ID_TIERS,
            groups=(("hard avg", synthetic.HARD_TIERS), ("OOD avg", synthetic.OOD_TIERS)),
            n_per_tier=32,
            k=4,
            temperature=0.6,
            max_new_tokens=384,
            seed=1_000_003,
        )
    )
    c.curves = ml_collections.ConfigDict(
        dict(
            arms=("sft", "grpo", "sft_then_grpo", "luffy", "srft", "hpt"), points=4, tiers=ID_TIERS, n_per_tier=16, k=2
        )
    )
    c.passk = ml_collections.ConfigDict(
        dict(
            arms=("base", "grpo", "sft", "hpt"), k=64, tiers=synthetic.TRAIN_TIERS + synthetic.OOD_TIERS, n_per_tier=10
        )
    )

    a = dict(
        sft=_arm("SFT", "sft"),
        grpo=_arm("GRPO", "grpo"),
        sft_then_grpo=_arm("SFT→GRPO", "sft_then_grpo"),
        luffy=_arm("LUFFY", "luffy"),
        srft=_arm("SRFT", "srft"),
        hpt=_arm("HPT", "hpt", hparams=dict(gamma=0.0)),
        # the gate ablation (n = 8: P ∈ {0, 1/8, …}; γ = 0 is the main HPT arm)
        hpt_gamma_1of8=_arm("HPT γ=1/8", "hpt", hparams=dict(gamma=0.125)),
        hpt_gamma_2of8=_arm("HPT γ=2/8", "hpt", hparams=dict(gamma=0.25)),
        # the offline-signal ablation (offline=sft is the main HPT arm)
        hpt_offline_rl=_arm("HPT, demo by off-policy RL", "hpt", hparams=dict(offline="rl")),
        hpt_offline_both=_arm("HPT, demo by SFT + off-policy RL", "hpt", hparams=dict(offline="both")),
        # as the authors' released script ran it
        hpt_released_code=_arm("HPT (released code)", "hpt", arg="released_code"),
    )
    for key in ABLATIONS:  # two seeds each (the laptop budget); the main table has three
        a[key]["seeds"] = (0, 1)
    c.arms = ml_collections.ConfigDict(a, type_safe=False)
    c.tables = (  # (title, arms): one table each in REPORT.md
        ("Main table (cf. the paper's Table 2)", MAIN),
        ("Gate ablation (γ with n = 8)", ("hpt", "hpt_gamma_1of8", "hpt_gamma_2of8")),
        ("Offline-signal ablation", ("hpt", "hpt_offline_rl", "hpt_offline_both")),
        ("HPT: paper text vs released code", ("hpt", "hpt_released_code")),
    )

    if variant == "demo":  # `make demo`: one seed, fewer steps and questions, no ablations
        c.seeds = (0,)
        c.budget.steps = 12
        c.budget.questions_per_step = 4
        c.eval.n_per_tier = 10
        c.eval.k = 2
        for key in ABLATIONS:
            del c.arms[key]
        c.tables = c.tables[:1]
        c.curves.arms = ()  # the accuracy-at-checkpoints plot is the full comparison's
        c.passk.k = 16
        c.passk.n_per_tier = 4
        c.passk.tiers = ID_TIERS
    if variant == "smoke":  # the test suite: every code path in seconds (random tiny base)
        c.seeds = (0, 1)
        # 8 rows (or groups of 3 × 8) per step: they split over the test suite's 8 CPU devices
        c.budget = ml_collections.ConfigDict(
            dict(steps=2, questions_per_step=8, n=2, max_new_tokens=8, temperature=1.0, learning_rate=1e-3)
        )
        c.base.overrides = (
            ("train.steps", 3),
            ("train.questions_per_step", 8),
            ("data.corpus.n_docs", 64),
            ("checkpoint.every", 3),
        )
        c.eval = ml_collections.ConfigDict(
            dict(
                id_tiers=("add_2", "add_4"),
                groups=(("OOD avg", ("add_8",)),),
                n_per_tier=2,
                k=2,
                temperature=1.0,
                max_new_tokens=8,
                seed=1,
            )
        )
        c.curves = ml_collections.ConfigDict(
            dict(arms=("grpo", "sft_then_grpo"), points=2, tiers=("add_2",), n_per_tier=2, k=1)
        )
        c.passk = ml_collections.ConfigDict(dict(arms=("base", "hpt"), k=4, tiers=("add_2",), n_per_tier=2))
        c.base.run_dir = f"{c.run_dir}/base"
        for key in list(c.arms.keys()):
            if key not in ("sft", "sft_then_grpo", "hpt", "hpt_offline_both", "hpt_released_code"):
                del c.arms[key]
        for key in ("sft", "sft_then_grpo", "hpt_offline_both", "hpt_released_code"):
            c.arms[key].seeds = (0,)
        c.tables = (
            ("Main", ("base", "sft", "sft_then_grpo", "hpt")),
            ("Ablations", ("hpt", "hpt_offline_both", "hpt_released_code")),
        )
        c.curves.arms = ("sft_then_grpo", "hpt")
        c.progress = False
    return c
