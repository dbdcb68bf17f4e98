"""Method comparisons: train several arms × seeds from one base model under one budget,
evaluate each on the same questions, and report tables, paired differences and plots.

A comparison config (see ``experiments/testbed.py``, ``experiments/paper_table.py``) names:

* ``base``: the base model every arm starts from: a shipped model directory
  (`upt_jax.bases.base_dir`) or a run directory (trained first with ``base.module`` when it has
  no checkpoint and ``base.train_if_missing``);
* ``arms``: ``{key: {label, module, arg, hparams, overrides, seeds}}``: an experiment config file
  (``sft``, ``grpo``, ``hpt``, …, or the pipeline ``sft_then_grpo``: ``<experiments_dir>/<module>.py``,
  loaded by path; ``experiments_dir`` defaults to the shipped ``experiments/``) with its argument,
  recipe hyper-parameters, config overrides ``((dotted key, value), …)`` and, optionally, its
  own seeds (default: ``seeds``); and optionally ``tiers`` (what it trains on; default
  ``eval.id_tiers``; a tier named twice is weighted twice), ``learning_rate`` (default the
  budget's), ``stages`` (``{stage: {tiers, learning_rate, overrides}}``: a pipeline stage's own)
  and ``sft_control`` (True or ``{learning_rate, label, overrides}``: add an SFT arm
  ``<key>_sft_control`` on the same tiers, seeds and budget, so that what RL adds is visible);
* ``budget``: what every arm gets: update steps, questions per step, rollouts per question,
  response length, learning rate (unless the arm sets its own), rollout temperature, and
  ``decay_frac`` (default 0: a constant rate; ``f > 0``: constant, then linear to 0 over the last
  ``f`` of each stage's steps, ``train.schedule=wsd``);
* ``eval`` (avg@k on ``id_tiers``, the tiers trained on, and on each of ``groups``,
  ``((label, tiers), …)``; ``data_seed`` draws the questions (default
  `upt_jax.eval.evaluate.DEFAULT_EVAL_SEED`; another one is a validation split), ``seed`` the
  samples, ``base_k`` the base model's samples per question (default ``k``)), ``curves``
  (accuracy per tier at intermediate checkpoints, seed ``seeds[0]``) and ``passk`` (pass@j up to
  ``k`` for some arms);
* ``tables``: ``((title, arm keys), …)``: each printed as one table (the main table, ablations);
  ``paired_against`` (optional): ``(arm, (arms, …))``, the arm compared with each of the others
  as a paired difference (default: HPT against the other arms of the first table).

``run_comparison(config)`` is resumable at every level: a finished run resumes at its last
step (so it is not retrained), and each evaluation is cached, keyed by its settings (and a shipped
base's checksum). Outputs, in ``config.run_dir``: ``results.json`` (every number, every question's
correct count), ``summary.json`` (each arm's paired difference against the base per tier and group,
with its SE: `upt_jax.studies.comparison_report`), ``REPORT.md`` (the tables, with mean ± std over
seeds, the paired differences and one sentence per arm) and ``plots/*.png``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from typing import Any, Mapping

import numpy as np

# each arm's config per seed and the base's (re-exported: they were defined here)
from upt_jax.studies.comparison_arms import arm_config, base_config, final_run_dirs, stage_settings, with_sft_controls
from upt_jax.studies.comparison_eval import (
    SamplerPool,
    base_eval,
    checkpoint_steps,
    eval_settings,
    evaluate_run,
    is_weights_dir,
    weights_sha,
)
from upt_jax.studies.comparison_plots import make_plots, read_metrics
from upt_jax.studies.comparison_report import BASE, eval_suites, paired_summary, write_report

log = logging.getLogger(__name__)

__all__ = [
    "BASE",
    "arm_config",
    "stage_settings",
    "with_sft_controls",
    "final_run_dirs",
    "eval_suites",
    "ensure_base",
    "run_arm",
    "evaluate_run",
    "read_metrics",
    "checkpoint_steps",
    "job_order",
    "run_comparison",
    "accuracy_curves",
    "pass_at_k_runs",
    "make_plots",
    "write_report",
    "SamplerPool",
]


# ----------------------------------------------------------------------------- running
def _runner(run):
    """``run``, or one training run (`upt_jax.train.trainer.train`)."""
    from upt_jax.train import trainer

    return run or trainer.train


def ensure_base(config, run=None) -> str:
    """The base model's directory: a shipped model directory as it is, a run directory trained
    first (by ``run``, default one training run) when it holds no finished checkpoint."""
    d = config.base.run_dir
    if is_weights_dir(d):
        return d
    steps, want = checkpoint_steps(d), 0
    if os.path.exists(os.path.join(d, "config.json")):  # finished: saved its configured last step
        with open(os.path.join(d, "config.json")) as f:
            want = int(json.load(f).get("train", {}).get("steps", 0))
    if steps and steps[-1] >= want:
        return d
    if not config.base.get("module") or not config.base.get("train_if_missing", True):
        raise FileNotFoundError(
            f"config.base.run_dir={d!r} is neither a shipped model directory (upt_jax.bases) "
            "nor a finished run; train it first (e.g. `upt train --config "
            "experiments/pretrain_tiny.py`) or set config.base.module to train it here"
        )
    c = base_config(config)
    print(f"[base] training the base model into {d} ({c.train.steps} steps)", flush=True)
    _runner(run)(c)
    return d


def check_same_base(config, base_dir: str) -> None:
    """Record the shipped base's checksum in ``<run_dir>/base.json``; ``ValueError`` when the run
    directory's arms were trained from other weights (a rerun would mix two base models)."""
    sha = weights_sha(base_dir)
    if sha is None:
        return
    path = os.path.join(config.run_dir, "base.json")
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f).get("weights_sha256")
        if old and old != sha:
            raise ValueError(
                f"{config.run_dir} holds arms trained from a base model with weights {old[:12]}…, but "
                f"{base_dir} now has {sha[:12]}… (a rebuilt base): use another run_dir or remove it"
            )
    with open(path, "w") as f:
        json.dump({"base": os.path.abspath(base_dir), "weights_sha256": sha}, f)


def run_arm(config, key: str, seed: int, run=None) -> list[str]:
    """Train (or resume, or find finished) arm ``key`` for ``seed``; returns its run dirs. ``run``
    runs the arm's config, or each stage's for a pipeline (default: one training run; the
    dispatcher's ``train`` runs any mode, e.g. STaR)."""
    from upt_jax.train.pipeline import run_pipeline

    kind, c = arm_config(config, key, seed)
    t0 = time.time()
    if kind == "pipeline":
        run_pipeline(c, run=run)
    else:
        _runner(run)(c)
    log.info("arm %s seed %d: %.1fs", key, seed, time.time() - t0)
    return final_run_dirs(kind, c)


def train_seconds(run_dirs) -> float:
    """An arm's training time from its stages' own logs: the sum of every step's ``time/step_s``
    (a step logged twice by a resume counts once, its last record). A comparison that finds a run
    finished reports the time it took when it ran, not the time it took to find it (``wall``)."""
    from upt_jax.studies.comparison_plots import read_metrics

    total = 0.0
    for d in run_dirs:
        steps = {r["step"]: float(r["time/step_s"]) for r in read_metrics([d]) if "time/step_s" in r}
        total += sum(steps.values())
    return total


def job_order(config) -> list[tuple[str, int]]:
    """``(arm, seed)`` in the order they run: the first table's arms, every seed; then the other
    arms seed by seed, so that an interrupted comparison has whole tables for the seeds it ran."""
    seeds = [int(s) for s in config.seeds]
    arm_seeds = {a: [int(s) for s in (config.arms[a].get("seeds") or seeds)] for a in config.arms}
    main = [k for k in (config.tables[0][1] if config.tables else ()) if k in arm_seeds]
    rest = [a for a in arm_seeds if a not in main]
    jobs = [(a, s) for a in main for s in arm_seeds[a]]
    for s in sorted({s for a in rest for s in arm_seeds[a]}):
        jobs += [(a, s) for a in rest if s in arm_seeds[a]]
    only = only_arms(config)
    return [(a, s) for a, s in jobs if a in only] if only else jobs


def only_arms(config) -> tuple[str, ...]:
    """``config.only_arms``: the arms this process runs (and their SFT controls), to spread one
    comparison over several processes or machines sharing its run directory; empty: every arm.
    Such a process trains and evaluates its arms and writes partial outputs; a last run without
    ``only_arms`` reuses every finished run and evaluation and makes the curves, pass@k and plots."""
    from upt_jax.config_files import name_tuple

    only = name_tuple(config.get("only_arms"))
    unknown = [a for a in only if a not in config.arms]
    if unknown:
        raise ValueError(f"only_arms: unknown arms {unknown}; arms: {list(config.arms)}")
    return only + tuple(a for a in config.arms if config.arms[a].get("control_of") in only and a not in only)


def _write_outputs(config, results: dict, plots: Mapping[str, str]) -> str:
    """results.json, summary.json (paired differences against the base) and REPORT.md."""
    from upt_jax.eval.report import write_json

    results["paired"] = paired_summary(config, results)
    write_json(os.path.join(config.run_dir, "results.json"), results)
    write_json(os.path.join(config.run_dir, "summary.json"), results["paired"]["vs_base"])
    return write_report(config, results, plots)


def run_comparison(config, run=None) -> dict:
    """Run every arm × seed, evaluate, write ``results.json``, ``summary.json``, ``REPORT.md`` and
    plots. ``run``: what runs an arm's (or the base's) config, default one training run
    (`upt_jax.train.trainer.train`); `upt_jax.dispatch.train` (``upt train``) passes itself, so an
    arm may be of any mode (STaR).

    Order: the main table's runs; then the accuracy curves, pass@k and plots; then the other
    arms (ablations). The outputs are rewritten after every run."""
    from tqdm.auto import tqdm

    t_start = time.time()
    config = with_sft_controls(copy.deepcopy(config))
    os.makedirs(config.run_dir, exist_ok=True)
    with open(os.path.join(config.run_dir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    base_dir = ensure_base(config, run)
    check_same_base(config, base_dir)
    ec = config.eval
    main = eval_settings(ec, eval_suites(ec), ec.n_per_tier, ec.k)
    base_settings = eval_settings(ec, eval_suites(ec), ec.n_per_tier, ec.get("base_k") or ec.k)
    jobs = job_order(config)
    main_arms = set(config.tables[0][1]) if config.tables else set(config.arms.keys())
    results: dict[str, Any] = {"settings": dict(main=main, base=base_settings), "arms": {}, "seconds": {}}
    print(
        f"[compare] base model {base_dir}; {len(config.arms)} arms, {len(jobs)} runs of {config.budget.steps} steps",
        flush=True,
    )
    samplers = SamplerPool()
    results["arms"][BASE] = dict(
        label=config.base.get("label", "base model"), seeds={"-": base_eval(config, base_dir, base_settings, samplers)}
    )
    plots: dict[str, str] = {}

    def finish_main():
        results["curves"] = accuracy_curves(config, base_dir, samplers)
        results["passk"] = pass_at_k_runs(config, base_dir, samplers)
        plots.update(make_plots(config, results))

    partial = bool(only_arms(config))
    bar = tqdm(jobs, desc="runs", disable=not config.get("progress", True))
    for key, seed in bar:
        if key not in main_arms and "curves" not in results and not partial:
            finish_main()
        bar.set_postfix_str(f"{key} seed {seed}")
        t0 = time.time()
        dirs = run_arm(config, key, seed, run)
        t1 = time.time()
        entry = results["arms"].setdefault(key, dict(label=config.arms[key].label, seeds={}, run_dirs={}))
        entry["seeds"][str(seed)] = evaluate_run(dirs[-1], main, samplers=samplers)
        entry["run_dirs"][str(seed)] = dirs
        results["seconds"][f"{key}/{seed}"] = dict(
            train=round(train_seconds(dirs), 1), wall=round(t1 - t0, 1), eval=round(time.time() - t1, 1)
        )
        _write_outputs(config, results, plots)  # partial, after every run
    bar.close()
    if not partial:  # a share's curves, pass@k and plots come with the run over every arm
        # a curves arm outside the main table (an ablation's) trained after the curves were made
        late = [a for a in config.curves.get("arms", ()) if a not in main_arms]
        if "curves" not in results or late:
            finish_main()  # evaluations already made are cached
        else:
            plots.update(make_plots(config, results))
    results["seconds"]["total"] = round(time.time() - t_start, 1)
    report = _write_outputs(config, results, plots)
    print(report, flush=True)
    print(
        f"[compare] report: {os.path.join(config.run_dir, 'REPORT.md')}; summary: "
        f"{os.path.join(config.run_dir, 'summary.json')}; plots: " + ", ".join(plots.values()),
        flush=True,
    )
    return results


# ----------------------------------------------------------------------------- curves
def accuracy_curves(config, base_dir: str, samplers: SamplerPool | None = None) -> dict:
    """Accuracy (avg@k) at every kept checkpoint of seed ``seeds[0]`` of each arm in
    ``curves.arms``, step 0 being the base model: ``points``, ``{arm: [(cumulative step, mean
    over curves.tiers)]}``, and ``tiers``, ``{arm: {tier: [(step, accuracy)]}}``."""
    cc = config.curves
    if not cc.get("arms"):
        return {}
    tiers = list(cc.tiers)
    settings = eval_settings(config.eval, tiers, cc.n_per_tier, cc.k)
    seed = int(config.seeds[0])
    steps = checkpoint_steps(base_dir)
    base = base_eval(config, base_dir, settings, samplers, step=steps[-1] if steps else None)
    points, per_tier = {}, {}
    for key in cc.arms:
        kind, c = arm_config(config, key, seed)
        evals, offset = [(0, base)], 0
        for d in final_run_dirs(kind, c):
            kept = checkpoint_steps(d)
            evals += [(offset + s, evaluate_run(d, settings, step=s, samplers=samplers)) for s in kept]
            offset += kept[-1] if kept else 0
        points[key] = [(s, float(np.mean([r[t]["avg_at_k"] for t in tiers]))) for s, r in evals]
        per_tier[key] = {t: [(s, float(r[t]["avg_at_k"])) for s, r in evals] for t in tiers}
    return dict(settings=settings, seed=seed, points=points, tiers=per_tier)


def pass_at_k_runs(config, base_dir: str, samplers: SamplerPool | None = None) -> dict:
    """pass@j for j up to ``passk.k`` (seed ``seeds[0]``): ``{arm: {suite: SuiteResult dict}}``."""
    pc = config.passk
    if not pc.get("arms"):
        return {}
    settings = eval_settings(config.eval, list(pc.tiers), pc.n_per_tier, pc.k)
    seed = int(config.seeds[0])
    out = {}
    for key in pc.arms:
        if key == BASE:
            out[key] = base_eval(config, base_dir, settings, samplers)
        elif key in config.arms:
            kind, c = arm_config(config, key, seed)
            out[key] = evaluate_run(final_run_dirs(kind, c)[-1], settings, samplers=samplers)
    return dict(settings=settings, seed=seed, results=out)
