"""A comparison's plots (PNG, Agg, no pyplot): training curves, HPT's gate, the training reward of
each tier (``reward/<tier>``, RL arms), the accuracy at checkpoints (ID average and per tier) and
pass@k. Each arm keeps one colour across figures."""

from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import numpy as np

from upt_jax.studies.comparison_report import BASE, label

__all__ = ["read_metrics", "make_plots"]


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
        steps = steps[smooth - 1 :]
    return np.asarray(steps), v


def _figure(panels: int, ncols: int, size=(3.6, 2.8)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, panels))
    nrows = -(-panels // ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(nrows, ncols, squeeze=False).flat)  # a list: .flat is a one-pass iterator
    for ax in list(axes)[panels:]:
        ax.set_visible(False)
    return fig, list(axes)[:panels]


def _panels(
    path: str,
    panels: Mapping[str, Mapping[str, tuple]],
    title: str,
    *,
    ylabel: str = "",
    ylim=None,
    marker=None,
    colors: Mapping[str, str] | None = None,
    ncols: int = 3,
) -> str:
    """One panel per ``{panel title: {line label: (steps, values)}}``, against the update step;
    one legend for all panels (the labels of the fullest panel)."""
    fig, axes = _figure(len(panels), ncols)
    handles, labels = [], []
    for ax, (name, series) in zip(axes, panels.items()):
        for lab, (x, y) in series.items():
            ax.plot(x, y, marker=marker, ms=3, label=lab, color=(colors or {}).get(lab))
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("update step")
        if ylabel:
            ax.set_ylabel(ylabel, fontsize=8)
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.grid(alpha=0.3)
        h, lab = ax.get_legend_handles_labels()
        if len(h) > len(handles):
            handles, labels = h, lab
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(6, len(labels)), fontsize=8)
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return path


def make_plots(config, results: dict) -> dict[str, str]:
    """Training curves, gate decisions, per-tier training reward, the accuracy curves (ID average and
    per tier) and pass@k (PNG, Agg); returns ``{name: path}``."""
    from upt_jax.eval.report import plot_pass_at_k

    out_dir = os.path.join(config.run_dir, "plots")
    os.makedirs(out_dir, exist_ok=True)
    metrics = {
        key: [read_metrics(d) for d in entry.get("run_dirs", {}).values()]
        for key, entry in results["arms"].items()
        if key != BASE
    }
    main = [k for k in (config.tables[0][1] if config.tables else ()) if k in metrics] or list(metrics)
    order = main + [k for k in metrics if k not in main]
    color = {config.arms[k].label: f"C{i % 10}" for i, k in enumerate(order)}  # one colour per arm
    smooth = int(config.get("plot_smooth", 5))
    paths = {}

    def over_seeds(arms, key):
        found = {config.arms[a].label: _mean_over_seeds(metrics[a], key, smooth) for a in arms}
        return {k: v for k, v in found.items() if v is not None}

    panels = {
        title: over_seeds(main, key)
        for key, title in (
            ("reward/mean", "training reward (rollouts)"),
            ("entropy", "policy entropy (trained tokens)"),
            ("response_length", "response length (SFT: demonstrations)"),
            ("nll", "NLL of trained tokens"),
        )
    }
    paths["training curves"] = _panels(
        os.path.join(out_dir, "training_curves.png"),
        panels,
        f"training curves (mean over seeds, {smooth}-step moving average)",
        colors=color,
        ncols=2,
    )
    # HPT arms (LUFFY and SRFT log the same statistic, P ≤ γ, but nothing is routed by it)
    gated = [
        k
        for k in order
        if config.arms[k].module == "hpt" and any("gate/sft_frac" in r for rows in metrics[k] for r in rows)
    ]
    series = over_seeds(gated, "gate/sft_frac")
    if series:
        paths["gate"] = _panels(
            os.path.join(out_dir, "gate_sft_fraction.png"),
            {"questions routed to SFT": series},
            f"HPT gate: fraction routed to SFT (mean over seeds, {smooth}-step average)",
            ylim=(-0.02, 1.02),
            colors=color,
        )
    tiers = sorted(
        {
            k.split("/", 1)[1]
            for runs in metrics.values()
            for rows in runs
            for r in rows
            for k in r
            if k.startswith("reward/") and k != "reward/mean"
        }
    )
    panels = {t: over_seeds(order, f"reward/{t}") for t in tiers}
    panels = {t: s for t, s in panels.items() if s}
    if panels:
        paths["training reward per tier"] = _panels(
            os.path.join(out_dir, "tier_rewards.png"),
            panels,
            f"training reward per tier (RL arms; mean over seeds, {smooth}-step average)",
            ylim=(-0.02, 1.02),
            colors=color,
        )
    paths.update(_accuracy_plots(config, results.get("curves") or {}, out_dir, color))
    pk = results.get("passk") or {}
    if pk.get("results"):
        runs = {label(config, k): v for k, v in pk["results"].items()}
        paths["pass@k"] = plot_pass_at_k(
            runs,
            os.path.join(out_dir, "pass_at_k.png"),
            title=f"pass@k (seed {pk['seed']}, temperature {pk['settings']['temperature']})",
        )
    return paths


def _accuracy_plots(config, curves: Mapping, out_dir: str, color: Mapping[str, str]) -> dict[str, str]:
    """The ID-average accuracy at checkpoints, and one panel per tier."""
    if not curves.get("points"):
        return {}
    k, seed = curves["settings"]["k"], curves["seed"]
    line = lambda pts: (np.asarray(pts)[:, 0], 100 * np.asarray(pts)[:, 1])  # noqa: E731
    paths = {
        "accuracy curves": _panels(
            os.path.join(out_dir, "accuracy_curves.png"),
            {f"ID avg@{k} (%)": {config.arms[a].label: line(p) for a, p in curves["points"].items()}},
            f"accuracy on the training tiers during training (seed {seed})",
            marker="o",
            colors=color,
        )
    }
    per_tier = curves.get("tiers") or {}
    if per_tier:
        names = list(dict.fromkeys(t for by_tier in per_tier.values() for t in by_tier))
        panels = {
            t: {config.arms[a].label: line(by_tier[t]) for a, by_tier in per_tier.items() if t in by_tier}
            for t in names
        }
        paths["accuracy curves per tier"] = _panels(
            os.path.join(out_dir, "tier_accuracy_curves.png"),
            panels,
            f"avg@{k} (%) per tier at checkpoints (seed {seed}; step 0 is the base model)",
            ylim=(-2, 102),
            marker="o",
            colors=color,
        )
    return paths
