"""Method comparisons: train several arms × seeds from one base model under one budget,
evaluate each on in-distribution and held-out suites, and report a table and plots.

A comparison config (see ``experiments/paper_table.py``) names:

* ``base``: the run directory of the base model every arm starts from (trained first with
  ``base.config`` when it has no checkpoint and ``base.train_if_missing``);
* ``arms``: ``{key: {label, module, arg, hparams, overrides, seeds}}``: an ``experiments/``
  module (``sft``, ``grpo``, ``hpt``, …, or the pipeline ``sft_then_grpo``) with its argument,
  recipe hyper-parameters, config overrides ``((dotted key, value), …)`` and, optionally, its
  own seeds (default: ``seeds``);
* ``budget``: what every arm gets: update steps, questions per step, rollouts per question,
  response length, learning rate, rollout temperature;
* ``eval`` (avg@k on ``id_tiers``, the tiers trained on, and on each of ``groups``,
  ``((label, tiers), …)``, e.g. harder and held-out tiers), ``curves`` (accuracy at intermediate
  checkpoints, seed ``seeds[0]``) and ``passk`` (pass@j up to ``k`` for some arms);
* ``tables``: ``((title, arm keys), …)``: each printed as one table (the main table, ablations).

``run_comparison(config)`` is resumable at every level: a finished run resumes at its last
step (so it is not retrained), and each evaluation is cached in its run directory keyed by its
settings. Outputs, in ``config.run_dir``: ``results.json`` (every number), ``REPORT.md``
(the tables, with mean ± std over seeds), and ``plots/*.png``.
"""
from __future__ import annotations

import copy
import hashlib
import importlib
import json
import logging
import os
import time
from typing import Any, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

BASE = "base"


# ----------------------------------------------------------------------------- configs
def _set_dotted(c, key: str, value) -> None:
    *parents, leaf = key.split(".")
    for p in parents:
        c = c[p]
    c[leaf] = value


def _plain(x):
    return x.to_dict() if hasattr(x, "to_dict") else (dict(x) if isinstance(x, Mapping) else x)


def _apply_budget(c, config, seed: int, run_dir: str, steps: int) -> None:
    """One training stage ``c`` set to the comparison's budget, seed and base model."""
    b = config.budget
    c.seed = int(seed)
    c.run_dir = run_dir
    c.train.steps = int(steps)
    c.train.questions_per_step = int(b.questions_per_step)
    c.train.learning_rate = float(b.learning_rate)
    c.train.schedule = "constant"
    c.train.warmup_steps = 0
    c.rollout.n = int(b.n)
    c.rollout.max_new_tokens = int(b.max_new_tokens)
    c.rollout.temperature = float(b.temperature)
    c.data.tiers = tuple(config.eval.id_tiers)
    every = max(1, int(steps) // max(1, int(config.curves.points)))
    c.checkpoint.every = every
    c.checkpoint.keep = int(config.curves.points) + 2
    c.log.progress = bool(config.get("progress", True))
    c.model.init = "checkpoint"
    c.model.checkpoint = config.base.run_dir


def arm_config(config, key: str, seed: int):
    """``(kind, config)`` of arm ``key`` for ``seed``: ``kind`` is ``train`` or ``pipeline``."""
    import ml_collections

    arm = config.arms[key]
    module = importlib.import_module(f"experiments.{arm.module}")
    c = module.get_config(arm.get("arg") or None)
    run_dir = os.path.join(config.run_dir, key, f"seed{seed}")
    steps = int(config.budget.steps)
    if "order" in c:  # a pipeline: the budget's steps are split over its stages
        c.run_dir = run_dir
        n = len(c.order)
        split = [steps // n + (1 if i < steps % n else 0) for i in range(n)]
        for name, s in zip(c.order, split):
            _apply_budget(c[name], config, seed, os.path.join(run_dir, name), s)
        kind = "pipeline"
    else:
        _apply_budget(c, config, seed, run_dir, steps)
        kind = "train"
    stages = [c[name] for name in c.order] if kind == "pipeline" else [c]
    for s in stages:
        if arm.get("hparams"):
            hp = s.recipe.hparams.to_dict() if hasattr(s.recipe.hparams, "to_dict") else {}
            if s.recipe.name == arm.get("hparams_recipe", s.recipe.name):
                hp.update(_plain(arm.hparams))
                s.recipe.hparams = ml_collections.ConfigDict(hp, type_safe=False)
        for k, v in arm.get("overrides") or ():
            _set_dotted(s, k, v)
    return kind, c


def final_run_dirs(kind: str, c) -> list[str]:
    """The run directories whose checkpoints make the arm's trajectory, in order."""
    if kind == "pipeline":
        return [os.path.join(c.run_dir, name) for name in c.order]
    return [c.run_dir]


def eval_suites(ec) -> list[str]:
    """Every evaluated tier: the trained ones, then each group's."""
    return list(dict.fromkeys(list(ec.id_tiers) + [t for _, tiers in ec.groups for t in tiers]))


# ----------------------------------------------------------------------------- running
def ensure_base(config) -> str:
    """The base model's run directory, trained first when it holds no checkpoint."""
    from upt_jax.train.trainer import train

    d = config.base.run_dir
    steps, want = checkpoint_steps(d), 0
    if os.path.exists(os.path.join(d, "config.json")):  # finished: saved its configured last step
        with open(os.path.join(d, "config.json")) as f:
            want = int(json.load(f).get("train", {}).get("steps", 0))
    if steps and steps[-1] >= want:
        return d
    if not config.base.get("train_if_missing", True):
        raise FileNotFoundError(f"config.base.run_dir={d!r} holds no finished base model; train it with "
                                "`upt train --config experiments/pretrain_tiny.py`")
    module = importlib.import_module(f"experiments.{config.base.module}")
    c = module.get_config(config.base.get("arg") or None)
    c.run_dir = d
    for k, v in config.base.get("overrides") or ():
        _set_dotted(c, k, v)
    c.log.progress = bool(config.get("progress", True))
    print(f"[base] training the base model into {d} ({c.train.steps} steps)", flush=True)
    train(c)
    return d


def run_arm(config, key: str, seed: int) -> list[str]:
    """Train (or resume, or find finished) arm ``key`` for ``seed``; returns its run dirs."""
    from upt_jax.train.pipeline import run_pipeline
    from upt_jax.train.trainer import train

    kind, c = arm_config(config, key, seed)
    t0 = time.time()
    if kind == "pipeline":
        run_pipeline(c)
    else:
        train(c)
    log.info("arm %s seed %d: %.1fs", key, seed, time.time() - t0)
    return final_run_dirs(kind, c)


def _eval_settings(ec, suites: Sequence[str], n: int, k: int) -> dict:
    return dict(suites=list(suites), n=int(n), k=int(k), temperature=float(ec.temperature),
                max_new_tokens=int(ec.max_new_tokens), seed=int(ec.seed))


class SamplerPool:
    """One `Sampler` per model shape, reused across evaluations (its executables are compiled
    once per shape bucket; each evaluation passes its own parameters)."""

    def __init__(self):
        self._samplers = {}

    def get(self, model, pad_id: int):
        from flax import nnx

        from upt_jax.sampling import Sampler

        key = (json.dumps(model.cfg.to_hf_dict(), sort_keys=True, default=str), pad_id)
        if key not in self._samplers:
            self._samplers[key] = Sampler(model, pad_id=pad_id)
        return self._samplers[key], nnx.state(model)


def evaluate_run(run_dir: str, settings: dict, *, step: int | None = None, cache: bool = True,
                 progress: bool = False, samplers: SamplerPool | None = None) -> dict:
    """``{suite: SuiteResult.to_dict()}`` of the run's checkpoint ``step`` (default latest),
    cached in ``<run_dir>/eval/<hash of settings and step>.json``."""
    import jax

    from upt_jax.eval.evaluate import evaluate, synthetic_suites
    from upt_jax.eval.report import results_to_json
    from upt_jax.eval.run import load_run_model

    tag = hashlib.sha1(json.dumps(dict(settings, step=step), sort_keys=True).encode()).hexdigest()[:12]
    path = os.path.join(run_dir, "eval", f"{tag}.json")
    if cache and os.path.exists(path):
        try:
            with open(path) as f:
                return json.load(f)["results"]
        except (OSError, ValueError, KeyError) as e:  # a cache cut short by a crash: recompute
            log.warning("ignoring unreadable evaluation cache %s: %s", path, e)
    model, tok, cfg, got = load_run_model(run_dir, step=step)
    suites = synthetic_suites(settings["suites"], n=settings["n"])
    sampler, params = (samplers or SamplerPool()).get(model, tok.pad_id)
    res = evaluate(model, tok, suites, k=settings["k"], temperature=settings["temperature"],
                   max_new_tokens=settings["max_new_tokens"], key=jax.random.key(settings["seed"]),
                   template=cfg.data.get("template", "zero"), default_verifier="integer",
                   progress=progress, sampler=sampler, params=params)
    out = results_to_json({s: r for s, r in res.items()})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(dict(settings=settings, step=got, results=out), f)
    os.replace(tmp, path)
    return out


def read_metrics(run_dirs: Sequence[str]) -> list[dict]:
    """The metrics lines of an arm's stages, one after the other (``step`` made cumulative)."""
    rows, offset = [], 0
    for d in run_dirs:
        p = os.path.join(d, "metrics.jsonl")
        if not os.path.exists(p):
            continue
        last = 0
        with open(p) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                last = max(last, int(r.get("step", 0)))
                rows.append(dict(r, step=offset + int(r.get("step", 0)), stage=os.path.basename(d)))
        offset += last
    return rows


def checkpoint_steps(run_dir: str) -> list[int]:
    ck = os.path.join(run_dir, "checkpoints")
    return sorted(int(p) for p in os.listdir(ck) if p.isdigit()) if os.path.isdir(ck) else []


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
    return jobs


def run_comparison(config) -> dict:
    """Run every arm × seed, evaluate, write ``results.json``, ``REPORT.md`` and plots.

    Order: the main table's runs; then the accuracy curves, pass@k and plots; then the other
    arms (ablations). The report and ``results.json`` are rewritten after every run."""
    from tqdm.auto import tqdm

    from upt_jax.eval.report import write_json

    t_start = time.time()
    os.makedirs(config.run_dir, exist_ok=True)
    with open(os.path.join(config.run_dir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    base_dir = ensure_base(config)
    ec = config.eval
    main = _eval_settings(ec, eval_suites(ec), ec.n_per_tier, ec.k)
    jobs = job_order(config)
    main_arms = set(config.tables[0][1]) if config.tables else set(config.arms.keys())
    results: dict[str, Any] = {"settings": dict(main=main), "arms": {}, "seconds": {}}
    print(f"[compare] base model {base_dir}; {len(config.arms)} arms, {len(jobs)} runs of "
          f"{config.budget.steps} steps", flush=True)
    samplers = SamplerPool()
    results["arms"][BASE] = dict(label=config.base.get("label", "base model"),
                                 seeds={"-": evaluate_run(base_dir, main, samplers=samplers)})
    plots: dict[str, str] = {}

    def finish_main():
        results["curves"] = accuracy_curves(config, base_dir, samplers)
        results["passk"] = pass_at_k_runs(config, base_dir, samplers)
        plots.update(make_plots(config, results))

    bar = tqdm(jobs, desc="runs", disable=not config.get("progress", True))
    for i, (key, seed) in enumerate(bar):
        if key not in main_arms and "curves" not in results:
            finish_main()
        bar.set_postfix_str(f"{key} seed {seed}")
        t0 = time.time()
        dirs = run_arm(config, key, seed)
        t1 = time.time()
        entry = results["arms"].setdefault(key, dict(label=config.arms[key].label, seeds={}, run_dirs={}))
        entry["seeds"][str(seed)] = evaluate_run(dirs[-1], main, samplers=samplers)
        entry["run_dirs"][str(seed)] = dirs
        results["seconds"][f"{key}/{seed}"] = dict(train=round(t1 - t0, 1), eval=round(time.time() - t1, 1))
        write_json(os.path.join(config.run_dir, "results.json"), results)  # partial, after every run
        write_report(config, results, plots)
    bar.close()
    if "curves" not in results:
        finish_main()
    else:
        plots.update(make_plots(config, results))
    results["seconds"]["total"] = round(time.time() - t_start, 1)
    write_json(os.path.join(config.run_dir, "results.json"), results)
    report = write_report(config, results, plots)
    print(report, flush=True)
    print(f"[compare] report: {os.path.join(config.run_dir, 'REPORT.md')}; plots: "
          + ", ".join(plots.values()), flush=True)
    return results


# ----------------------------------------------------------------------------- curves
def accuracy_curves(config, base_dir: str, samplers: SamplerPool | None = None) -> dict:
    """ID accuracy (avg@k over ``curves.tiers``) at every kept checkpoint of seed ``seeds[0]``
    of each arm in ``curves.arms``: ``{arm: [(cumulative step, accuracy)]}``."""
    cc = config.curves
    if not cc.get("arms"):
        return {}
    settings = _eval_settings(config.eval, list(cc.tiers), cc.n_per_tier, cc.k)
    seed = int(config.seeds[0])
    acc = lambda res: float(np.mean([res[s]["avg_at_k"] for s in cc.tiers]))  # noqa: E731
    base = acc(evaluate_run(base_dir, settings, step=checkpoint_steps(base_dir)[-1], samplers=samplers))
    curves = {}
    for key in cc.arms:
        kind, c = arm_config(config, key, seed)
        points, offset = [(0, base)], 0
        for d in final_run_dirs(kind, c):
            steps = checkpoint_steps(d)
            for s in steps:
                points.append((offset + s, acc(evaluate_run(d, settings, step=s, samplers=samplers))))
            offset += steps[-1] if steps else 0
        curves[key] = points
    return dict(settings=settings, seed=seed, points=curves)


def pass_at_k_runs(config, base_dir: str, samplers: SamplerPool | None = None) -> dict:
    """pass@j for j up to ``passk.k`` (seed ``seeds[0]``): ``{arm: {suite: SuiteResult dict}}``."""
    pc = config.passk
    if not pc.get("arms"):
        return {}
    settings = _eval_settings(config.eval, list(pc.tiers), pc.n_per_tier, pc.k)
    seed = int(config.seeds[0])
    out = {}
    for key in pc.arms:
        if key == BASE:
            out[key] = evaluate_run(base_dir, settings, samplers=samplers)
        else:
            kind, c = arm_config(config, key, seed)
            out[key] = evaluate_run(final_run_dirs(kind, c)[-1], settings, samplers=samplers)
    return dict(settings=settings, seed=seed, results=out)


# ----------------------------------------------------------------------------- report
def _label(config, key: str) -> str:
    return config.base.get("label", "base model") if key == BASE else config.arms[key].label


def _table_runs(results: dict, keys: Sequence[str], labels: Mapping[str, str]) -> dict:
    runs = {}
    for key in keys:
        if key in results["arms"]:
            runs[labels[key]] = list(results["arms"][key]["seeds"].values())
    return runs


def write_report(config, results: dict, plots: Mapping[str, str]) -> str:
    from upt_jax.eval.report import results_table

    ec = config.eval
    labels = {k: _label(config, k) for k in [BASE] + list(config.arms.keys())}
    suites = eval_suites(ec)
    groups = (("ID avg", tuple(ec.id_tiers)),) + tuple((g, tuple(t)) for g, t in ec.groups)
    lines = [f"# {config.get('title', 'Comparison')}", ""]
    b = config.budget
    lines.append(
        f"Every arm starts from the base model `{config.base.run_dir}` and gets {b.steps} update steps × "
        f"{b.questions_per_step} questions, {b.n} rollouts per question (temperature {b.temperature}, ≤ "
        f"{b.max_new_tokens} new tokens), learning rate {b.learning_rate}. Evaluation: avg@{ec.k} in %, "
        f"{ec.n_per_tier} questions per tier (seed {ec.seed}), temperature {ec.temperature}; mean ± std "
        f"over seeds {list(config.seeds)}. Trained on (ID): {', '.join(ec.id_tiers)}; "
        + "; ".join(f"{g}: {', '.join(t)}" for g, t in ec.groups) + " (never trained on).")
    lines.append("")
    for name, keys in config.tables:
        keys = [k for k in keys if k == BASE or k in config.arms]
        lines += [f"## {name}", "", results_table(_table_runs(results, keys, labels), suites=suites,
                                                   groups=groups), ""]
    pk = results.get("passk") or {}
    if pk:
        from upt_jax.eval.report import results_table as rt

        runs = {labels[k]: [v] for k, v in pk["results"].items()}
        kmax = pk["settings"]["k"]
        lines += [f"## pass@{kmax} (seed {pk['seed']}, {pk['settings']['n']} questions per tier)", "",
                  rt(runs, metric=f"pass@{kmax}", suites=pk["settings"]["suites"]), ""]
    if plots:
        lines += ["## Plots", ""] + [f"- {k}: `{v}`" for k, v in plots.items()] + [""]
    secs = results.get("seconds", {})
    if "total" in secs:
        lines.append(f"Wall time: {secs['total'] / 60:.1f} min.")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(config.run_dir, "REPORT.md"), "w") as f:
        f.write(text)
    return text


def _series(rows: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["step"], r[key]) for r in rows if key in r and r[key] is not None]
    if not pts:
        return np.zeros(0), np.zeros(0)
    s, v = np.asarray(pts, np.float64).T
    return s, v


def _mean_over_seeds(runs: Sequence[Sequence[dict]], key: str, smooth: int = 1):
    """Mean over seeds of a metric, aligned on step (steps that every seed has)."""
    per = [dict(zip(*_series(rows, key))) for rows in runs]
    per = [p for p in per if p]
    if not per:
        return None
    steps = sorted(set.intersection(*(set(p) for p in per)))
    if not steps:
        return None
    v = np.asarray([[p[s] for s in steps] for p in per]).mean(axis=0)
    if smooth > 1 and len(v) >= smooth:
        v = np.convolve(v, np.ones(smooth) / smooth, mode="valid")
        steps = steps[smooth - 1:]
    return np.asarray(steps), v


def _line_figure(path: str, series: Mapping[str, tuple], ylabel: str, title: str, *, ylim=None,
                 marker=None, colors: Mapping[str, str] | None = None) -> str:
    """One panel, one line per ``{label: (steps, values)}``, against the update step (PNG, Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for label, (x, y) in series.items():
        ax.plot(x, y, marker=marker, ms=3, label=label, color=(colors or {}).get(label))
    ax.set_xlabel("update step")
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=100)
    return path


def make_plots(config, results: dict) -> dict[str, str]:
    """Training curves, gate decisions, the ID-accuracy curves and pass@k (PNG, Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from upt_jax.eval.report import plot_pass_at_k

    out_dir = os.path.join(config.run_dir, "plots")
    os.makedirs(out_dir, exist_ok=True)
    metrics = {key: [read_metrics(d) for d in entry.get("run_dirs", {}).values()]
               for key, entry in results["arms"].items() if key != BASE}
    main = [k for k in (config.tables[0][1] if config.tables else ()) if k in metrics] or list(metrics)
    order = main + [k for k in metrics if k not in main]
    color = {config.arms[k].label: f"C{i % 10}" for i, k in enumerate(order)}  # one colour per arm
    smooth = int(config.get("plot_smooth", 5))
    paths = {}

    fig = Figure(figsize=(11, 7.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    for ax, (key, title) in zip(axes.flat, (("reward/mean", "training reward (rollouts)"),
                                            ("entropy", "policy entropy (trained tokens)"),
                                            ("response_length", "response length (SFT: demonstrations)"),
                                            ("nll", "NLL of trained tokens"))):
        for arm in main:
            m = _mean_over_seeds(metrics[arm], key, smooth)
            if m is not None:
                ax.plot(*m, label=config.arms[arm].label, color=color[config.arms[arm].label])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("update step")
        ax.grid(alpha=0.3)
    h, lab = axes.flat[0].get_legend_handles_labels()
    for ax in axes.flat:
        if len(ax.get_legend_handles_labels()[0]) > len(h):
            h, lab = ax.get_legend_handles_labels()
    fig.legend(h, lab, loc="outside lower center", ncols=min(6, max(1, len(lab))), fontsize=8)
    fig.suptitle(f"training curves (mean over seeds, {smooth}-step moving average)")
    paths["training curves"] = os.path.join(out_dir, "training_curves.png")
    fig.savefig(paths["training curves"], dpi=100)

    # HPT arms (LUFFY and SRFT log the same statistic, P ≤ γ, but nothing is routed by it)
    gated = [k for k in order if config.arms[k].module == "hpt"
             and any("gate/sft_frac" in r for rows in metrics[k] for r in rows)]
    series = {config.arms[a].label: _mean_over_seeds(metrics[a], "gate/sft_frac", smooth) for a in gated}
    series = {k: v for k, v in series.items() if v is not None}
    if series:
        paths["gate"] = _line_figure(
            os.path.join(out_dir, "gate_sft_fraction.png"), series, "questions routed to SFT",
            f"HPT gate: fraction routed to SFT (mean over seeds, {smooth}-step average)", ylim=(-0.02, 1.02),
            colors=color)
    curves = results.get("curves") or {}
    if curves.get("points"):
        series = {config.arms[a].label: (np.asarray(pts)[:, 0], 100 * np.asarray(pts)[:, 1])
                  for a, pts in curves["points"].items()}
        paths["accuracy curves"] = _line_figure(
            os.path.join(out_dir, "accuracy_curves.png"), series, f"ID avg@{curves['settings']['k']} (%)",
            f"accuracy on the training tiers during training (seed {curves['seed']})", marker="o", colors=color)

    pk = results.get("passk") or {}
    if pk.get("results"):
        runs = {_label(config, k): v for k, v in pk["results"].items()}
        paths["pass@k"] = plot_pass_at_k(runs, os.path.join(out_dir, "pass_at_k.png"),
                                         title=f"pass@k (seed {pk['seed']}, temperature "
                                               f"{pk['settings']['temperature']})")
    return paths
