"""A comparison's report: the tables of REPORT.md, and every arm's paired difference against the
base model (and HPT's against each baseline) with its bootstrap SE, in ``summary.json``.

Paired differences (`upt_jax.eval.paired`) compare two models on the *same* questions (the
comparison evaluates every model on one fixed draw, ``eval.seed``), per tier and per group of tiers
(the group's questions pooled). ``summary.json``::

    {arm: {tier or group: {"base": float, "arm": float, "diff": float, "se": float, "seeds": [str]}}}

as fractions (× 100 for points): the two mean accuracies on the paired questions, their difference
and its two-level bootstrap standard error (over training seeds and questions), and the arm's seeds.
An arm *beats the base* on a tier when ``diff > 2 · se`` there (`beats_base`).
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

BASE = "base"
Z = 2.0  # "beats the base": a paired difference more than Z standard errors above 0

__all__ = [
    "BASE",
    "label",
    "eval_suites",
    "groups_of",
    "paired_entry",
    "paired_summary",
    "beats_base",
    "arm_sentence",
    "beats_sentence",
    "paired_table",
    "write_report",
    "shown_path",
]


def shown_path(path: str, start: str) -> str:
    """``path`` as a committed report shows it: relative to ``start`` (the report's directory) when
    it lies inside it, relative to the repository when it lies inside that (a shipped base,
    ``upt_jax/bases/…``), else as given; so a run directory copied into docs/ carries no
    machine's absolute paths."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    full = os.path.abspath(path)
    for root in (os.path.abspath(start), repo):
        if full == root or full.startswith(root + os.sep):
            return os.path.relpath(full, root)
    return path


def time_line(secs: dict) -> str:
    """The report's time: this invocation's wall time, and the training time the runs recorded
    (a comparison assembled from runs made by earlier invocations took minutes to assemble, not
    the hours its runs trained)."""
    runs = [v for v in secs.values() if isinstance(v, dict)]
    train = sum(float(v.get("train", 0.0)) for v in runs)
    return (
        f"Wall time of this invocation: {secs['total'] / 60:.1f} min; training, summed over the "
        f"{len(runs)} runs' recorded steps: {train / 60:.1f} min."
    )


def label(config, key: str) -> str:
    return config.base.get("label", "base model") if key == BASE else config.arms[key].label


def eval_suites(ec) -> list[str]:
    """Every evaluated tier: the trained ones, then each group's."""
    return list(dict.fromkeys(list(ec.id_tiers) + [t for _, tiers in ec.groups for t in tiers]))


def groups_of(ec) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The report's groups of tiers: ``ID avg`` (the tiers trained on), then ``eval.groups``."""
    return (("ID avg", tuple(ec.id_tiers)),) + tuple((g, tuple(t)) for g, t in ec.groups)


def _pooled(seed_result: Mapping, tiers: Sequence[str]) -> dict[str, float]:
    """``{question id: accuracy}`` over ``tiers`` of one seed's ``{suite: SuiteResult dict}``."""
    from upt_jax.eval.paired import accuracy_by_id

    out: dict[str, float] = {}
    for t in tiers:
        out.update(accuracy_by_id(seed_result[t]))
    return out


def paired_entry(base_seeds: Sequence[Mapping], arm_seeds: Mapping[str, Mapping], tiers: Sequence[str]) -> dict:
    """``{"base", "arm", "diff", "se", "seeds"}`` of the arm's seeds (``{seed: {suite: result}}``)
    against ``base_seeds`` (one result for the base model, or another arm's seeds), over the pooled
    questions of ``tiers``."""
    from upt_jax.eval.paired import paired_difference

    base = [_pooled(b, tiers) for b in base_seeds]
    d = paired_difference(base if len(base) > 1 else base[0], [_pooled(a, tiers) for a in arm_seeds.values()])
    return {"base": d.base, "arm": d.arm, "diff": d.delta, "se": d.se, "seeds": list(arm_seeds)}


def _entries(base_seeds, arm_seeds, suites, groups) -> dict:
    out = {t: paired_entry(base_seeds, arm_seeds, [t]) for t in suites}
    out.update({g: paired_entry(base_seeds, arm_seeds, tiers) for g, tiers in groups if tiers})
    return out


def _reference_pairs(config, results: Mapping) -> tuple[str | None, list[str]]:
    """``(reference arm, the arms it is compared with)``: ``config.paired_against = (ref, arms)``,
    by default HPT against the other arms of the first table."""
    spec = config.get("paired_against")
    if spec:
        ref, others = spec[0], list(spec[1])
    else:
        ref = "hpt" if "hpt" in config.arms else None
        main = config.tables[0][1] if config.tables else tuple(config.arms.keys())
        others = [k for k in main if k not in (BASE, ref)]
    arms = results["arms"]
    return (ref, [k for k in others if k in arms and k != ref]) if ref in arms else (None, [])


def paired_summary(config, results: Mapping) -> dict:
    """``{"vs_base": {arm: {tier/group: entry}}, "vs": {ref: {arm: {tier/group: entry}}}}`` of the
    arms evaluated so far (see the module docstring for an entry)."""
    arms, ec = results["arms"], config.eval
    if BASE not in arms:
        return {"vs_base": {}, "vs": {}}
    suites, groups = eval_suites(ec), groups_of(ec)
    base = list(arms[BASE]["seeds"].values())
    out = {
        "vs_base": {k: _entries(base, e["seeds"], suites, groups) for k, e in arms.items() if k != BASE and e["seeds"]},
        "vs": {},
    }
    ref, others = _reference_pairs(config, results)
    if ref is not None and others:
        out["vs"][ref] = {
            k: _entries(list(arms[k]["seeds"].values()), arms[ref]["seeds"], suites, groups) for k in others
        }
    return out


def beats_base(entries: Mapping[str, Mapping], tiers: Sequence[str], z: float = Z) -> list[str]:
    """The ``tiers`` on which ``entries`` (one arm's) shows ``diff > z · se`` (and ``diff > 0``)."""
    return [t for t in tiers if t in entries and entries[t]["diff"] > max(z * entries[t]["se"], 0.0)]


def _z(e: Mapping) -> float:
    """``diff / se`` (± inf for a nonzero difference with no spread, 0 for none)."""
    if e["se"] > 0:
        return e["diff"] / e["se"]
    return 0.0 if e["diff"] == 0 else float("inf") if e["diff"] > 0 else float("-inf")


def _pts(e: Mapping) -> str:
    return f"{100 * e['diff']:+.1f} ± {100 * e['se']:.1f}"


def arm_sentence(name: str, entries: Mapping[str, Mapping], tiers: Sequence[str], z: float = Z) -> str:
    """One sentence: whether the arm beats the base by more than ``z`` SE on some tier, and where."""
    won = beats_base(entries, tiers, z)
    n = len(next(iter(entries.values()))["seeds"]) if entries else 0
    seeds = f"{n} seed{'s' if n != 1 else ''}"
    if won:
        where = ", ".join(f"{t} ({_pts(entries[t])})" for t in won)
        return f"**{name}** beats the base by more than {z:g} SE on {where} ({seeds})."
    have = [t for t in tiers if t in entries]
    if not have:
        return f"**{name}**: not evaluated yet."
    best = max(have, key=lambda t: _z(entries[t]))  # the largest difference in standard errors
    return (
        f"**{name}** beats the base by more than {z:g} SE on no tier (closest: {best} {_pts(entries[best])}; {seeds})."
    )


def beats_sentence(config, summary: Mapping, z: float = Z) -> str:
    """One sentence naming the arms that beat the base by more than ``z`` SE on some tier."""
    tiers = eval_suites(config.eval)
    won = [(k, beats_base(e, tiers, z)) for k, e in summary.get("vs_base", {}).items()]
    won = [(k, t) for k, t in won if t]
    if not won:
        return f"No arm beats the base model by more than {z:g} standard errors on any tier."
    return (
        f"Beat the base model by more than {z:g} standard errors on some tier: "
        + "; ".join(f"{label(config, k)} ({', '.join(t)})" for k, t in won)
        + "."
    )


def paired_table(rows: Mapping[str, Mapping[str, Mapping]], columns: Sequence[str], title: str = "arm") -> str:
    """A markdown table of paired differences in points, ``diff ± se`` per cell (``–``: none)."""
    lines = ["| " + " | ".join([title, *columns]) + " |", "|" + "|".join(["---"] + ["---:"] * len(columns)) + "|"]
    for name, entries in rows.items():
        lines.append("| " + " | ".join([name] + [_pts(entries[c]) if c in entries else "–" for c in columns]) + " |")
    return "\n".join(lines) + "\n"


def _mix(tiers: Sequence[str]) -> str:
    """``("a", "a", "b")`` → ``"a ×2, b"``."""
    return ", ".join(t if tiers.count(t) == 1 else f"{t} ×{tiers.count(t)}" for t in dict.fromkeys(tiers))


def arms_table(config) -> str:
    """One row per arm and stage: its recipe, what it trains on, its rate and questions per step."""
    from upt_jax.studies.comparison_arms import arm_config

    lines = [
        "| arm | stage | recipe | trains on | learning rate | questions per step | steps |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for key in config.arms:
        kind, c = arm_config(config, key, int((config.arms[key].get("seeds") or config.seeds)[0]))
        for name in list(c.order) if kind == "pipeline" else ["–"]:
            s = c[name] if kind == "pipeline" else c
            lines.append(
                f"| {config.arms[key].label} | {name} | {s.recipe.name} | {_mix(tuple(s.data.tiers))} | "
                f"{s.train.learning_rate:g} | {s.train.questions_per_step} | {s.train.steps} |"
            )
    return "\n".join(lines) + "\n"


def _table_runs(results: dict, keys: Sequence[str], labels: Mapping[str, str]) -> dict:
    return {labels[k]: list(results["arms"][k]["seeds"].values()) for k in keys if k in results["arms"]}


def _paired_sections(config, results: Mapping, labels: Mapping[str, str]) -> list[str]:
    summary = results.get("paired") or {}
    vs_base = summary.get("vs_base") or {}
    if not vs_base:
        return []
    suites = eval_suites(config.eval)
    columns = suites + [g for g, _ in groups_of(config.eval)]
    order = [k for k in config.arms if k in vs_base]
    lines = [
        "## Paired differences against the base model (points, ± bootstrap SE over seeds and questions)",
        "",
        paired_table({labels[k]: vs_base[k] for k in order}, columns),
        "",
    ]
    lines += [f"- {arm_sentence(labels[k], vs_base[k], suites)}" for k in order]
    lines += ["", beats_sentence(config, summary), ""]
    for ref, against in (summary.get("vs") or {}).items():
        lines += [
            f"## {labels[ref]} against each baseline (paired, points)",
            "",
            paired_table({f"{labels[ref]} − {labels[k]}": e for k, e in against.items()}, columns),
            "",
        ]
    return lines


def write_report(config, results: dict, plots: Mapping[str, str]) -> str:
    """REPORT.md: the setting, one table per ``config.tables``, the paired differences (with one
    sentence per arm), pass@k, the plots and the wall time; returns its text."""
    from upt_jax.eval.report import results_table

    ec = config.eval
    labels = {k: label(config, k) for k in [BASE] + list(config.arms.keys())}
    suites = eval_suites(ec)
    groups = groups_of(ec)
    lines = [f"# {config.get('title', 'Comparison')}", ""]
    b = config.budget
    lines.append(
        f"Every arm starts from the base model `{shown_path(config.base.run_dir, config.run_dir)}` and gets {b.steps} update steps × "
        f"{b.questions_per_step} questions, {b.n} rollouts per question (temperature {b.temperature}, ≤ "
        f"{b.max_new_tokens} new tokens), learning rate {b.learning_rate}, unless its arm sets its own (the table "
        f"below). Evaluation: "
        f"avg@{ec.k} in % (the base model: avg@{ec.get('base_k') or ec.k}), {ec.n_per_tier} questions per tier, the "
        f"same for every model (sampling seed {ec.seed}), temperature {ec.temperature}; "
        f"mean ± std over seeds {list(config.seeds)}. Trained on (ID): {', '.join(ec.id_tiers)}; "
        + "; ".join(f"{g}: {', '.join(t)}" for g, t in ec.groups)
        + "."
    )
    lines += ["", "## Arms", "", arms_table(config), ""]
    for name, keys in config.tables:
        keys = [k for k in keys if k == BASE or k in config.arms]
        lines += [f"## {name}", "", results_table(_table_runs(results, keys, labels), suites=suites, groups=groups), ""]
    lines += _paired_sections(config, results, labels)
    pk = results.get("passk") or {}
    if pk:
        runs = {labels[k]: [v] for k, v in pk["results"].items()}
        kmax = pk["settings"]["k"]
        lines += [
            f"## pass@{kmax} (seed {pk['seed']}, {pk['settings']['n']} questions per tier)",
            "",
            results_table(runs, metric=f"pass@{kmax}", suites=pk["settings"]["suites"]),
            "",
        ]
    if plots:
        shown = {k: shown_path(v, config.run_dir) for k, v in plots.items()}
        lines += ["## Plots", ""] + [f"- {k}: [`{v}`]({v})" for k, v in shown.items()] + [""]
    secs = results.get("seconds", {})
    if "total" in secs:
        lines.append(time_line(secs))
    text = "\n".join(lines) + "\n"
    with open(os.path.join(config.run_dir, "REPORT.md"), "w") as f:
        f.write(text)
    return text
