"""Result tables (markdown), JSON files and pass@k plots.

The input everywhere is *runs*: ``{method: results}`` where ``results`` is one evaluation
(``{suite: SuiteResult}``, as `evaluate` returns) or a list of them, one per seed. Numbers
are shown in percent; with several seeds a cell reads ``mean ± std`` (sample std over
seeds). ID / OOD columns average the named suites within each seed first.

Example::

  runs = {"SFT": [res_seed0, res_seed1], "HPT": [res_seed0, res_seed1]}
  print(results_table(runs, metric="avg@k", id_suites=synthetic.TRAIN_TIERS,
                      ood_suites=synthetic.OOD_TIERS))
  plot_pass_at_k(runs, "passk.png")
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from upt_jax.eval import metrics
from upt_jax.eval.evaluate import SuiteResult

__all__ = [
    "metric_value",
    "metric_values",
    "results_table",
    "suite_table",
    "results_to_json",
    "write_json",
    "read_json",
    "plot_pass_at_k",
]


def _as_result(r) -> SuiteResult:
    return r if isinstance(r, SuiteResult) else SuiteResult.from_dict(r)


def _seeds(results) -> list[Mapping[str, Any]]:
    """One evaluation or a list of them → a list (one per seed)."""
    return list(results) if isinstance(results, (list, tuple)) else [results]


def metric_value(result, metric: str) -> float:
    """``"avg@k"`` (also ``"avg"``), ``"pass@J"``, ``"length"`` or ``"truncated"`` of one suite."""
    r = _as_result(result)
    if metric in ("avg@k", "avg", f"avg@{r.k}"):
        return r.avg_at_k
    if metric.startswith("pass@"):
        j = r.k if metric == "pass@k" else int(metric[len("pass@") :])
        if j not in r.pass_at_k:
            raise KeyError(f"{r.name}: no pass@{j} (have {sorted(r.pass_at_k)})")
        return r.pass_at_k[j]
    if metric == "length":
        return r.mean_response_length
    if metric == "truncated":
        return r.truncated_frac
    raise ValueError(f"unknown metric {metric!r}: avg@k, pass@J, pass@k, length, truncated")


def metric_values(results, metric: str = "avg@k") -> list[dict[str, float]]:
    """``[{suite: value}]``, one dict per seed."""
    return [{s: metric_value(r, metric) for s, r in seed.items()} for seed in _seeds(results)]


def _cell(ms: metrics.MeanStd, scale: float, digits: int) -> str:
    return ms.format(digits, scale)


def results_table(
    runs: Mapping[str, Any],
    *,
    metric: str = "avg@k",
    suites: Sequence[str] | None = None,
    id_suites: Sequence[str] | None = None,
    ood_suites: Sequence[str] | None = None,
    percent: bool = True,
    digits: int = 1,
    title: str = "method",
    groups: Sequence[tuple[str, Sequence[str]]] | None = None,
) -> str:
    """A markdown table: one row per method, one column per suite (+ ID / OOD averages).

    Args:
      runs: ``{method: results or [results per seed]}``; results are ``{suite: SuiteResult}``
        (or its ``to_dict()``) or already ``{suite: float}``.
      metric: ``avg@k``, ``pass@J`` (e.g. ``pass@8``), ``pass@k``, ``length``, ``truncated``.
      suites: columns, in order (default: every suite seen, first-seen order).
      id_suites, ood_suites: when given, an ``ID avg`` / ``OOD avg`` column averaging those
        of them present in the table (per seed, then mean ± std over seeds).
      percent: show fractions ×100 (not for ``length``).
    """
    per_method = {}
    for method, results in runs.items():
        seeds = _seeds(results)
        if seeds and seeds[0] and all(isinstance(v, (int, float)) for v in seeds[0].values()):
            per_method[method] = [dict(s) for s in seeds]
        else:
            per_method[method] = metric_values(results, metric)
    if suites is None:
        suites = list(dict.fromkeys(s for vals in per_method.values() for seed in vals for s in seed))
    suites = list(suites)
    scale = 100.0 if percent and metric != "length" else 1.0
    columns = []
    for label, members in (("ID avg", id_suites), ("OOD avg", ood_suites), *(groups or ())):
        if members is not None:
            present = [s for s in suites if s in set(members)]
            columns.append((label, present))
    header = [title] + suites + [g for g, _ in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for method, vals in per_method.items():
        agg = metrics.aggregate_seeds(vals)
        cells = [method]
        cells += [_cell(agg[s], scale, digits) if s in agg else "–" for s in suites]
        cells += [_cell(metrics.group_average(vals, members), scale, digits) for _, members in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def suite_table(results, *, percent: bool = True, digits: int = 1) -> str:
    """A markdown table of one evaluation, one row per suite: questions, avg@k, every
    pass@j, mean response length, truncated fraction and verifier reasons."""
    seeds = _seeds(results)
    first = {s: _as_result(r) for s, r in seeds[0].items()}
    ks = sorted({j for r in first.values() for j in r.pass_at_k})
    scale = 100.0 if percent else 1.0
    k = max((r.k for r in first.values()), default=1)
    header = ["suite", "questions", f"avg@{k}"] + [f"pass@{j}" for j in ks] + ["mean length", "truncated", "reasons"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 2) + ["---"]) + "|"]
    for name, r in first.items():
        per = [{name: _as_result(seed[name])} for seed in seeds if name in seed]
        get = lambda m: metrics.mean_std(metric_value(p[name], m) for p in per)  # noqa: E731
        cells = [name, str(r.num_questions), _cell(get("avg@k"), scale, digits)]
        cells += [_cell(get(f"pass@{j}"), scale, digits) if j in r.pass_at_k else "–" for j in ks]
        cells += [_cell(get("length"), 1.0, 1), _cell(get("truncated"), scale, digits)]
        cells.append(", ".join(f"{reason} {n}" for reason, n in sorted(r.reasons.items())) or "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _jsonable(x):
    if isinstance(x, SuiteResult):
        return _jsonable(x.to_dict())
    if isinstance(x, metrics.MeanStd):
        return x.to_dict()
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None  # strict JSON has no NaN / inf
    return x


def results_to_json(obj) -> Any:
    """A JSON-serialisable copy (``SuiteResult`` → dict, numpy → lists, NaN → null)."""
    return _jsonable(obj)


def write_json(path: str | os.PathLike, obj, *, indent: int = 2) -> str:
    """Write ``results_to_json(obj)`` to ``path`` (directories created); returns the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(_jsonable(obj), f, indent=indent, allow_nan=False)
        f.write("\n")
    return path


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def plot_pass_at_k(
    runs: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    suites: Sequence[str] | None = None,
    ncols: int = 4,
    title: str | None = None,
) -> str:
    """pass@j against j (log₂ axis), one panel per suite, one line per method (mean over
    seeds, shaded ± std when several). Written as a PNG with the Agg backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data: dict[str, dict[str, tuple[list[int], np.ndarray, np.ndarray]]] = {}
    for method, results in runs.items():
        seeds = [{s: _as_result(r) for s, r in seed.items()} for seed in _seeds(results)]
        for name in dict.fromkeys(s for seed in seeds for s in seed):
            have = [seed[name] for seed in seeds if name in seed]
            ks = sorted(set.intersection(*(set(r.pass_at_k) for r in have)))
            vals = np.asarray([[r.pass_at_k[j] for j in ks] for r in have], np.float64)
            std = vals.std(axis=0, ddof=1) if len(have) > 1 else np.zeros(len(ks))
            data.setdefault(name, {})[method] = (ks, vals.mean(axis=0), std)
    names = list(suites) if suites is not None else list(data)
    if not names:
        raise ValueError("nothing to plot: no suites")
    ncols = max(1, min(ncols, len(names)))
    nrows = -(-len(names) // ncols)
    fig = Figure(figsize=(3.2 * ncols, 2.6 * nrows), layout="constrained")
    FigureCanvasAgg(fig)  # Agg, without pyplot: no global backend switch, no display needed
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        for method, (ks, mean, std) in data.get(name, {}).items():
            ax.plot(ks, 100 * mean, marker="o", ms=3, label=method)
            if np.any(std > 0):
                ax.fill_between(ks, 100 * (mean - std), 100 * (mean + std), alpha=0.2)
        ax.set_xscale("log", base=2)
        ticks = sorted({j for ks, _, _ in data.get(name, {}).values() for j in ks})
        if ticks:
            ax.set_xticks(ticks, [str(j) for j in ticks])
            ax.minorticks_off()
        ax.set_title(name, fontsize=9)
        ax.set_ylim(-2, 102)
        ax.set_xlabel("k", fontsize=8)
        ax.set_ylabel("pass@k (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), fontsize=8)
    if title:
        fig.suptitle(title)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
