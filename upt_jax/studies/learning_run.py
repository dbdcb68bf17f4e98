"""Running the learning checks of `upt_jax.studies.learning`: prepare what a check needs from the
base model, train every seed (`upt_jax.studies.comparison.run_arm`: resumable, a finished run is not
retrained), measure, and report each metric as a paired difference with its bootstrap SE.

    from upt_jax.studies import learning, learning_run
    result = learning_run.run_check(learning.checks("grpo")[0], "runs/learning", seeds=(0, 1, 2))
    learning_run.run_study("runs/learning", only="grpo,dpo", seeds=(0, 1, 2))   # + results.json, LEARNING.md

A result is ``{key, label, metric, note, seeds, seconds: {seed: train s}, wall_s, rows: [row]}``
(``seconds``: each run's own training time from its log, also when a rerun finds it finished;
``wall_s``: those plus this invocation's preparing and measuring, cached evaluations not timed again); a row
``{metric, unit, base, after, diff, se, n, seeds, direction, shown}`` (``direction`` +1 when the
regime should raise it, −1 lower, 0 for a guard: a solved tier that must not drop by more than
2 SE; ``shown``: the difference is beyond 2 SE in that direction, or for a guard that it did not drop).
"""

from __future__ import annotations

import collections
import copy
import json
import logging
import math
import os
import time

import numpy as np

from upt_jax.studies import comparison as cmp
from upt_jax.studies.comparison_eval import SamplerPool, base_eval, eval_settings, evaluate_run
from upt_jax.eval.paired import accuracy_by_id, paired_difference
from upt_jax.studies import learning_metrics as lm
from upt_jax.studies.learning import (
    FAMILY,
    FULL,
    METRICS,
    Scale,
    accuracy_metric,
    checks,
    pairs_dir,
    solved_tiers,
    study_config,
    target_tier,
)

log = logging.getLogger(__name__)

__all__ = ["shipped_base", "run_check", "run_study", "paired_row"]

# one sampler per model shape for every evaluation of the process (its executables compile once)
_POOL = SamplerPool()


def shipped_base(family: str = FAMILY) -> dict:
    from upt_jax import bases

    return dict(run_dir=bases.base_dir(family), label="base model (shipped)")


def paired_row(metric: str, base, arms: list[dict], *, unit: str = "pct", direction: int = 1) -> dict:
    """A table row: ``arms`` (one ``{item id: value}`` per seed) paired with ``base`` (one dict for
    every seed, or a list paired seed by seed with ``arms``, as when each seed has its own reward
    model or initial head; then the seeds' differences are bootstrapped against 0)."""
    if isinstance(base, list):
        diffs = [{i: a[i] - b[i] for i in a if i in b} for a, b in zip(arms, base)]
        d = paired_difference({i: 0.0 for i in diffs[0]}, diffs)
        base_mean = float(np.mean([np.mean([b[i] for i in diffs[0]]) for b in base]))
        after, diff = base_mean + d.delta, d.delta
    else:
        d = paired_difference(base, arms)
        base_mean, after, diff = d.base, d.arm, d.delta
    shown = diff >= -2 * d.se if direction == 0 else direction * diff > 2 * d.se
    return dict(
        metric=metric,
        unit=unit,
        base=base_mean,
        after=after,
        diff=diff,
        se=d.se,
        n=d.n_questions,
        seeds=d.n_seeds,
        direction=direction,
        shown=bool(shown),
    )


def prepare(check, c, base_dir: str, run_dir: str, scale: Scale) -> dict:
    """What the check trains from: its overrides (data file, student, teacher) and ``start``, the
    model it is paired against (the base, or the perturbed student)."""
    out = dict(start=base_dir, overrides=())
    if check.data in ("pairs", "kto", "reward_model"):
        out["pairs"] = lm.preference_pairs(
            base_dir,
            pairs_dir(check, run_dir),
            tier=target_tier(check),
            n_train=scale.pair_questions,
            n_heldout=scale.heldout,
            k=scale.pair_k,
            max_new_tokens=int(c.budget.max_new_tokens),
            eval_seed=int(c.eval.seed),
            demo_fallback=scale.demo_fallback,
            pairs_per_question=scale.pairs_per_question,
            samplers=_POOL,
        )
        if check.data != "reward_model":
            path = os.path.join(pairs_dir(check, run_dir), "kto.jsonl" if check.data == "kto" else "pairs.jsonl")
            out["overrides"] = (("data.source", "file"), ("data.path", path))
    if check.data == "student":
        noise = scale.noise if check.noise is None else check.noise
        out["start"] = lm.perturbed_student(base_dir, os.path.join(run_dir, f"student_{noise:g}"), noise=noise)
        out["overrides"] = (("model.checkpoint", out["start"]), ("teacher.run_dir", base_dir))
    return out


def _runner(check):
    """What runs ``check``'s arm: STaR's rounds (`upt_jax.train.star.run_star`) for the STaR check,
    else one training run (the comparison's default)."""
    from upt_jax.train.star import run_star

    return run_star if check.module == "star" else None


def _final_dir(check, dirs: list[str]) -> str:
    if check.module == "star":  # STaR's model is its last round's SFT run (run_dir/round_<r>)
        rounds = [
            int(p.split("_")[1])
            for p in os.listdir(dirs[-1])
            if p.startswith("round_") and os.path.isdir(os.path.join(dirs[-1], p, "checkpoints"))
        ]
        if not rounds:
            raise FileNotFoundError(f"{dirs[-1]}: STaR trained no round (every round kept nothing?)")
        return os.path.join(dirs[-1], f"round_{max(rounds)}")
    return dirs[-1]


def _accuracy_rows(check, c, start: str, finals: list[str], scale: Scale, label: str | None = None) -> list[dict]:
    """The targeted tier (the family's RL tier unless the check names another) and the solved
    tiers (guards), paired with ``start``."""
    rows, pool = [], _POOL
    for tiers, n, direction in (((target_tier(check),), scale.n_eval, 1), (solved_tiers(check), scale.n_guard, 0)):
        settings = eval_settings(c.eval, list(tiers), n, scale.k)
        base = base_eval(c, start, eval_settings(c.eval, list(tiers), n, scale.base_k), pool)
        arms = [evaluate_run(d, settings, samplers=pool) for d in finals]
        for t in tiers:
            name = (label or accuracy_metric(check)) if direction else f"solved tier {t} (must not drop > 2 SE)"
            rows.append(
                paired_row(name, accuracy_by_id(base[t]), [accuracy_by_id(a[t]) for a in arms], direction=direction)
            )
    return rows


def _critic_rows(check, c, dirs: list[str], scale: Scale) -> list[dict]:
    """PPO's critic on held-out questions (`learning_metrics.critic_errors`), twice: on the RL tier
    alone and on the training mix (``check.tiers`` in its proportions: the RL tier and the replayed
    solved tiers). Each: its squared error against the returns of its policy's own samples, paired
    per question with the best constant baseline's (the variance GAE's advantages keep), and the
    pooled explained variance. On the mix, a critic that has learned which questions its policy
    solves explains the between-tier part of the returns' variance; within the RL tier only what
    it can tell about each sample (a slip) counts."""
    from upt_jax.data import tasks

    seed = int(c.eval.seed)
    heldout = {
        "RL tier": tasks.generate(target_tier(check), scale.n_eval, seed=seed),
        "training mix": [  # each tier's share of n_eval, rounded up
            r
            for t, times in collections.Counter(check.tiers).items()
            for r in tasks.generate(t, math.ceil(scale.n_eval * times / len(check.tiers)), seed=seed)
        ],
    }
    rows = []
    for where, records in heldout.items():
        out = [
            lm.critic_errors(
                d, records, k=scale.k, max_new_tokens=int(c.eval.max_new_tokens), seed=seed, samplers=_POOL
            )
            for d in dirs
        ]
        rows.append(
            paired_row(
                f"critic's squared error of the held-out returns, {where} (constant baseline → critic)",
                [b for b, _, _ in out],
                [a for _, a, _ in out],
                unit="raw",
                direction=-1,
            )
        )
        ev = [e for _, _, e in out]
        se = float(np.std(ev, ddof=1) / np.sqrt(len(ev))) if len(ev) > 1 else float("nan")
        mean = float(np.mean(ev))
        rows.append(
            dict(
                metric=f"critic's explained variance of the held-out returns, {where} (constant baseline: 0)",
                unit="raw",
                base=0.0,
                after=mean,
                diff=mean,
                se=se,
                n=len(records),
                seeds=len(ev),
                direction=1,
                shown=bool(mean > 2 * se) if se == se else False,
            )
        )
    return rows


def measure(
    check, c, prep: dict, base_dir: str, finals: dict[int, str], scale: Scale, rm_dirs: dict[int, str] | None = None
) -> list[dict]:
    """The check's rows (see the module docstring), its own metric first."""
    from upt_jax.data import tasks

    seeds = sorted(finals)
    dirs = [finals[s] for s in seeds]
    start = prep["start"]
    if check.metric == "accuracy":
        rows = _accuracy_rows(check, c, start, dirs, scale)
        if check.module == "ppo":
            rows += _critic_rows(check, c, dirs, scale)
        return rows
    if check.metric == "preference":
        heldout = lm.read_jsonl(os.path.join(pairs_dir(check, c.run_dir), "heldout.jsonl"))
        reference = check.arg in ("dpo", "ipo", "kto")
        base = lm.preference_accuracy(base_dir, base_dir, heldout, reference=reference)
        arms = [lm.preference_accuracy(d, base_dir, heldout, reference=reference) for d in dirs]
        return [
            paired_row(METRICS["preference"], base[0], [a[0] for a in arms]),
            paired_row(METRICS["margin"], base[1], [a[1] for a in arms], unit="raw"),
        ] + _accuracy_rows(check, c, start, dirs, scale)
    if check.metric == "distill":
        records = tasks.generate(target_tier(check), scale.n_eval, seed=int(c.eval.seed))
        base = lm.forward_kl(start, base_dir, records)
        rows = [
            paired_row(
                METRICS["distill"], base, [lm.forward_kl(d, base_dir, records) for d in dirs], unit="nats", direction=-1
            )
        ]
        acc = _accuracy_rows(check, c, start, dirs, scale, label="student's RL-tier accuracy (teacher: the base)")
        tier = target_tier(check)
        teacher = base_eval(c, base_dir, eval_settings(c.eval, [tier], scale.n_eval, scale.base_k), _POOL)
        t_acc = float(np.mean(list(accuracy_by_id(teacher[tier]).values())))
        gap = dict(
            acc[0],
            metric="accuracy gap to the teacher (RL tier)",
            base=t_acc - acc[0]["base"],
            after=t_acc - acc[0]["after"],
            diff=-acc[0]["diff"],
            direction=-1,
        )
        return rows + [gap] + acc
    if check.metric in ("reward_model", "prm"):
        from flax import nnx

        from upt_jax.models.reward import reward_model_from
        from upt_jax.train.reward_model import load_reward_model
        from upt_jax.train.run_model import load_run_model

        policy, tok, cfg, _ = load_run_model(base_dir)
        template = cfg.data.get("template", "zero")
        if check.metric == "reward_model":
            items = lm.read_jsonl(os.path.join(pairs_dir(check, c.run_dir), "heldout.jsonl"))
            score = lambda g, p: lm.pair_accuracy(g, p, tok, template, items)  # noqa: E731
        else:
            items = tasks.generate(target_tier(check), scale.heldout, seed=int(c.eval.seed))
            score = lambda g, p: lm.step_accuracy(g, p, tok, template, items, seed=int(c.eval.seed))  # noqa: E731
        before = [score(*nnx.split(reward_model_from(policy, seed=s))) for s in seeds]  # each seed's initial head
        after = [score(*load_reward_model(d)) for d in dirs]
        rows = [paired_row(METRICS[check.metric], before, after)]
        if check.metric == "prm":  # the label rate alone (every step called right) scores above ½
            majority = score(None, None)
            rows.append(paired_row("held-out step-label accuracy against the majority rule", majority, after))
        return rows
    if check.metric == "rlhf":
        records = tasks.generate(target_tier(check), scale.n_eval, seed=int(c.eval.seed))
        kw = dict(k=scale.k, max_new_tokens=int(c.eval.max_new_tokens), seed=int(c.eval.seed), samplers=_POOL)
        base = [lm.learned_reward(base_dir, rm_dirs[s], records, **kw) for s in seeds]
        after = [lm.learned_reward(d, rm_dirs[s], records, **kw) for s, d in zip(seeds, dirs)]
        spread = [b[2] for b in base]  # each seed's reward model's scale, on the base's samples
        return [
            paired_row(
                METRICS["rlhf"],
                [lm.in_spread_units(b[0], sd) for b, sd in zip(base, spread)],
                [lm.in_spread_units(a[0], sd) for a, sd in zip(after, spread)],
                unit="raw",
            ),
            paired_row("learned reward, raw scores", [b[0] for b in base], [a[0] for a in after], unit="raw"),
            paired_row("verifier accuracy of the same samples (RL tier)", [b[1] for b in base], [a[1] for a in after]),
        ] + _accuracy_rows(check, c, start, dirs, scale)[1:]
    raise ValueError(f"unknown metric {check.metric!r}")


def run_check(check, run_dir: str, *, seeds=(0, 1, 2), scale: Scale = FULL, base: dict | None = None) -> dict:
    """Train ``check`` for every seed from the base (``base``: default the shipped ``arith_hint``
    model; a comparison's ``base`` dict otherwise) and measure it; runs in ``<run_dir>/<key>/``."""
    t_start = time.time()
    base = dict(base or shipped_base(check.family))
    c = study_config(check, run_dir, base=base, seeds=seeds, scale=scale)
    base_dir = cmp.ensure_base(c)
    prep = prepare(check, c, base_dir, run_dir, scale)
    c.arms[check.key].overrides = tuple(c.arms[check.key].overrides) + prep["overrides"]
    rm_dirs: dict[int, str] = {}
    finals, seconds, training = {}, {}, 0.0  # training: this invocation's seconds in run_arm
    for seed in seeds:
        if check.data == "reward_model":  # the reward_model check's model of the same seed
            rm = checks("reward_model")[0]
            rc = study_config(rm, run_dir, base=base, seeds=(seed,), scale=scale)
            rc.arms.reward_model.overrides = (
                tuple(rc.arms.reward_model.overrides) + prepare(rm, rc, base_dir, run_dir, scale)["overrides"]
            )
            rm_dirs[seed] = cmp.run_arm(rc, "reward_model", seed)[-1]
            sc = copy.deepcopy(c)
            sc.arms[check.key].overrides = tuple(sc.arms[check.key].overrides) + (
                ("reward.model_run_dir", rm_dirs[seed]),
            )
        else:
            sc = c
        t0 = time.time()
        dirs = cmp.run_arm(sc, check.key, seed, run=_runner(check))
        finals[seed] = _final_dir(check, dirs)
        training += time.time() - t0
        # the run's own training time (a finished run found again reports the time it took when it ran)
        seconds[str(seed)] = round(cmp.train_seconds(dirs) or time.time() - t0, 1)
    rows = measure(check, c, prep, base_dir, finals, scale, rm_dirs)
    other = time.time() - t_start - training  # preparing and measuring, in this invocation
    return dict(
        key=check.key,
        label=check.label,
        metric=check.metric,
        note=check.note,
        seeds=list(seeds),
        seconds=seconds,
        wall_s=round(sum(seconds.values()) + other, 1),
        rows=rows,
        budget=dict(c.budget.to_dict(), tiers=list(check.tiers)),
        data=prep.get("pairs"),
    )


def run_study(
    run_dir: str, *, only=None, seeds=(0, 1, 2), scale: Scale = FULL, base: dict | None = None, doc: str | None = None
) -> dict:
    """Every check of ``only`` (default all) in turn; after each, ``<run_dir>/results.json`` (merged
    with the checks an earlier call ran) and ``<run_dir>/LEARNING.md`` are rewritten (and ``doc``,
    e.g. docs/learning.md, when given). A check that fails is recorded with its error and the
    study goes on. Returns the results."""
    from upt_jax.studies.learning_report import write_report
    from upt_jax.train.preemption import Preempted

    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "results.json")
    results = {"checks": {}}
    if os.path.exists(path):
        with open(path) as f:
            results = json.load(f)
    from upt_jax.studies.learning_report import commit

    sha = commit()  # of the code this call runs (HEAD may move while it runs)
    for check in checks(only):
        print(f"[learning] {check.key}: seeds {list(seeds)}", flush=True)
        try:
            results["checks"][check.key] = dict(
                run_check(check, run_dir, seeds=seeds, scale=scale, base=base), commit=sha
            )
        except Preempted:  # SIGTERM / Ctrl-C: the run saved its step; the study stops (a rerun resumes)
            raise
        except Exception as e:  # noqa: BLE001 — one regime's failure is reported, not the study's end
            log.exception("learning check %s failed", check.key)
            results["checks"][check.key] = dict(
                key=check.key,
                label=check.label,
                metric=check.metric,
                error=f"{type(e).__name__}: {e}",
                seeds=list(seeds),
            )
        with open(path + ".tmp", "w") as f:
            json.dump(results, f, indent=2)
        os.replace(path + ".tmp", path)
        write_report(results, os.path.join(run_dir, "LEARNING.md"), doc=doc)
    return results
