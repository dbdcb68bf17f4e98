"""The per-method learning-rate sweep of the testbed comparison (`experiments/testbed.py`): each
method (`testbed.METHODS`: SFT, GRPO, LUFFY, SRFT, HPT) trained at every rate of its grid with the
comparison's budget (the same steps, questions and rollouts for every method), on the same tiers
as in the comparison, and scored on a *validation split*: questions drawn with another seed
(`VALIDATION_SEED`) than the comparison's test questions, so the rates are not chosen on the
numbers they will be reported with.

    python -m experiments.testbed_sweep RUN_DIR                         # every method, seed 0
    python -m experiments.testbed_sweep RUN_DIR --methods grpo,hpt --seeds 0,1
    python -m experiments.testbed_sweep RUN_DIR --variant smoke         # the test suite's
    python -m experiments.testbed_sweep RUN_DIR --variant countdown --methods srft  # the other family
    python -m experiments.testbed_sweep RUN_DIR --methods hpt --rates 3e-3   # one more point
    python -m experiments.testbed_sweep RUN_DIR --methods hpt --hparam sft_loss_coef=0.1,0.3
                                                # a loss coefficient, at the method's chosen rate
    python -m experiments.testbed_sweep RUN_DIR --methods hpt --rates 1e-4,3e-4 \
        --hparam sft_loss_coef=0.01,0.1 --joint  # rate × coefficient

Writes ``RUN_DIR/sweep.json``: per method, per rate, the paired difference against the base on
every tier and group (`upt_jax.studies.comparison_report`), the score (the paired difference on the
``ID avg`` group: every tier trained on, so a rate that gains on its target tiers by forgetting the
solved ones scores low) and the best rate; plus the comparison's own outputs (``REPORT.md``,
``summary.json``, plots). Resumable: a rerun reuses finished runs and cached evaluations, and a
sweep run method by method (or a grid extended by ``--rates``) in one directory keeps every point
in ``sweep.json`` (`merge_previous`; one of another split, seeds or budget is kept beside as
``sweep.N.json``). SFT→GRPO has no rate of its own (its stages use SFT's and GRPO's).

``--hparam NAME=V1,V2`` (``hparam_grids``) sweeps one of a method's hyperparameters (a hybrid's
per-term loss coefficient, such as HPT's ``sft_loss_coef``) at the rate `testbed.METHODS` holds for
it, the learning-rate sweep's choice; ``sweep.json`` then has, per method, ``hparams`` and
``hparam_scores`` by value, and ``best_hparams``, which count the rate arm at that rate (the
method's default value) as one more point when the sweep has it.
"""

import argparse
import itertools
import os
import sys

import ml_collections

from upt_jax.config_files import sibling

testbed = sibling(__file__, "testbed")  # loaded by path: experiments/ is not a package

VALIDATION_SEED = 2_000_003  # the test questions use upt_jax.eval.evaluate.DEFAULT_EVAL_SEED
SCORE = "ID avg"
VALIDATION_QUESTIONS = 64  # per tier, as every sweep in docs/testbed.md ran (the comparison: 256)


def _key(method: str, lr: float, hparam: tuple[str, float] | None = None) -> str:
    key = f"{method}_lr{lr:g}" + (f"_{hparam[0]}{hparam[1]:g}" if hparam else "")
    return key.replace(".", "p")  # a config key has no dots


def get_config(arg: str | None = None, *, methods=None, seeds=(0,), grids=None, hparam_grids=None, joint=False):
    """The sweep as a comparison config: one arm per (method, rate); ``arg`` is the testbed's
    variant (``full``, ``smoke``); ``grids``: ``{method: rates}`` instead of `testbed.METHODS`';
    ``hparam_grids``: ``{method: {name: values}}``, one more arm per value at the method's rate
    (and no rate arms for a method that has no ``grids`` entry); with ``joint``, one per value at
    every rate of the method's grid instead (a joint grid: rate × value)."""
    c = testbed.get_config(arg or "full")
    methods = tuple(methods or testbed.METHODS)
    unknown = set(methods) - set(testbed.METHODS)
    if unknown:
        raise ValueError(f"testbed_sweep: unknown methods {sorted(unknown)}; methods: {tuple(testbed.METHODS)}")
    template = testbed.arms(c, swept=False)  # the rate grids ran at the methods' default hyperparameters
    arms = {}
    hparam_grids = hparam_grids or {}
    for m in methods:
        arm = {k: v for k, v in template[m].items() if k != "sft_control"}
        rates = (grids or {}).get(m, () if m in hparam_grids else testbed.METHODS[m]["grid"])
        for lr in rates:
            arms[_key(m, lr)] = dict(arm, label=f"{arm['label']} lr {lr:g}", learning_rate=float(lr), method=m)
        hrates = rates if joint else (testbed.chosen(m, c.family)["learning_rate"],)
        for name, values in hparam_grids.get(m, {}).items():
            for lr, v in itertools.product(map(float, hrates), values):
                arms[_key(m, lr, (name, v))] = dict(
                    arm,
                    label=f"{arm['label']} lr {lr:g}, {name} {v:g}",
                    learning_rate=lr,
                    method=m,
                    hparams={**dict(arm.get("hparams") or {}), name: float(v)},
                    swept=(name, float(v)),
                )
    c.name = c.name.replace("testbed", "testbed_sweep", 1)  # testbed_sweep[_countdown]_VARIANT
    c.title = "Learning-rate sweep on the testbed's validation split"
    testbed.set_run_dir(c, c.run_dir.replace("testbed", "testbed_sweep"))
    c.seeds = tuple(int(s) for s in seeds)
    c.arms = ml_collections.ConfigDict(arms, type_safe=False)
    c.eval.data_seed = VALIDATION_SEED
    c.eval.n_per_tier = VALIDATION_QUESTIONS
    c.curves.arms = ()
    c.passk.arms = ()
    c.paired_against = ()
    c.tables = tuple((m, ("base",) + tuple(k for k in arms if arms[k]["method"] == m)) for m in methods)
    return c


def header(config) -> dict:
    """What makes two sweeps' scores comparable: the validation split, the score, seeds, budget."""
    return {
        "validation_seed": int(config.eval.data_seed),
        "score": f"paired difference on {SCORE}",
        "seeds": list(config.seeds),
        "budget": config.budget.to_dict(),
    }


def _same_settings(config, previous: dict) -> bool:
    return all(previous.get(k) == v for k, v in header(config).items())


def _chosen_rates(config) -> dict[str, str]:
    """Each method's chosen learning rate (`testbed.chosen`), as sweep.json's rate keys write it."""
    return {m: f"{testbed.chosen(m, config.family)['learning_rate']:g}" for m in testbed.METHODS}


def sweep_results(config, results: dict) -> dict:
    """``{"validation_seed", "score", "budget", "methods": {method: {"rates": {rate: {tier/group:
    entry}}, "scores": {rate: ID-avg difference}, "best": rate}}}`` from a comparison's results.

    A method with hyperparameter arms also has ``hparams``/``hparam_scores``/``best_hparams``: the
    arms at its chosen rate (`testbed.METHODS`), by value; and ``joint``: ``{name: {rate: {value:
    score}}}`` over every rate swept (each rate arm counted as the default value's point at its rate),
    with ``best_joint``: ``{name: {"learning_rate": rate, "value": value, "score": score}}``."""
    vs_base = results["paired"]["vs_base"]
    out = {**header(config), "methods": {}}
    chosen = _chosen_rates(config)
    for key, arm in config.arms.items():
        if key not in vs_base:
            continue
        m = out["methods"].setdefault(arm.method, {"rates": {}, "scores": {}})
        rate, score = f"{arm.learning_rate:g}", vs_base[key][SCORE]["diff"]
        if not arm.get("swept"):
            m["rates"][rate], m["scores"][rate] = vs_base[key], score
            continue
        name, value = arm.swept
        m.setdefault("joint", {}).setdefault(name, {}).setdefault(rate, {})[f"{value:g}"] = score
        if rate == chosen[arm.method]:
            m.setdefault("hparams", {}).setdefault(name, {})[f"{value:g}"] = vs_base[key]
            m.setdefault("hparam_scores", {}).setdefault(name, {})[f"{value:g}"] = score
    return choose(config, out)


_CHOSEN = ("best", "best_hparams", "best_joint")


def choose(config, out: dict) -> dict:
    """Each method's ``best`` rate, ``best_hparams`` and ``best_joint`` from its scores (the rate
    arms counted as the default value's point at their rate in ``joint``)."""
    chosen = _chosen_rates(config)
    for name, m in out["methods"].items():
        for k in _CHOSEN:
            m.pop(k, None)
        if m["scores"]:
            m["best"] = float(max(m["scores"], key=m["scores"].get))
        for hp, by_rate in m.get("joint", {}).items():
            if m["scores"] and (default := _default_hparam(config, name, hp)) is not None:
                default = f"{default:g}"  # each rate arm: the default value's point at its rate
                for rate, score in m["scores"].items():
                    by_rate.setdefault(rate, {}).setdefault(default, score)
            if hp in m.get("hparam_scores", {}):  # the best value at the chosen rate, the default counted
                at_chosen = by_rate[chosen[name]]
                m.setdefault("best_hparams", {})[hp] = float(max(at_chosen, key=at_chosen.get))
            r, v, s = max(
                ((float(r), float(v), s) for r, by_value in by_rate.items() for v, s in by_value.items()),
                key=lambda p: p[2],
            )
            m.setdefault("best_joint", {})[hp] = {"learning_rate": r, "value": v, "score": s}
    return out


def _default_hparam(config, method: str, name: str) -> float | None:
    """The value of recipe hyperparameter ``name`` that ``method``'s rate arms train with: the arm's
    own ``hparams``, else the recipe builder's default (`upt_jax.upge.RECIPES`)."""
    import inspect

    from upt_jax import upge

    arm = next((a for a in config.arms.values() if a.method == method and not a.get("swept")), None)
    if arm is None:  # a method merged from an earlier sweep.json: its points are already there
        return None
    if name in (arm.get("hparams") or {}):
        return float(arm.hparams[name])
    return float(inspect.signature(upge.RECIPES[method]).parameters[name].default)


def merge_previous(config, out: dict, previous: dict | None) -> dict:
    """``out`` with what an earlier ``sweep.json`` of the same run directory (``previous``) has and
    this invocation did not run: its methods, rates and hyperparameter values (this run's win where
    both have one), the choices then made again over the union. So a sweep run method by method,
    or a grid extended by ``--rates``, keeps every point. An earlier file of another validation
    split, score, seeds or budget is not merged (None: there was none)."""
    if not previous or not _same_settings(config, previous):
        return out

    def merge(old, new):
        if isinstance(old, dict) and isinstance(new, dict) and not {"diff", "se"} & set(new):
            return {**old, **{k: merge(old[k], v) if k in old else v for k, v in new.items()}}
        return new

    methods = {name: {k: v for k, v in m.items() if k not in _CHOSEN} for name, m in previous["methods"].items()}
    return choose(config, {**out, "methods": merge(methods, out["methods"])})


def run(config) -> dict:
    """Run the sweep (resumable) and write ``<run_dir>/sweep.json`` (merged with an earlier one of
    the same split, seeds and budget: `merge_previous`); returns its content."""
    import json

    from upt_jax.eval.report import write_json
    from upt_jax.studies.comparison import run_comparison

    path = os.path.join(config.run_dir, "sweep.json")
    previous = None
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        if not _same_settings(config, previous):
            kept = next(
                f"{path[:-5]}.{i}.json" for i in itertools.count(1) if not os.path.exists(f"{path[:-5]}.{i}.json")
            )
            os.replace(path, kept)  # other settings: kept beside, not merged
            print(f"[sweep] {path} had another split, seeds or budget: kept as {kept}", flush=True)
            previous = None
    out = merge_previous(config, sweep_results(config, run_comparison(config)), previous)
    write_json(path, out)
    for name, m in out["methods"].items():
        scores = ", ".join(f"{r}: {100 * s:+.1f}" for r, s in m["scores"].items())
        if m["scores"]:
            print(f"[sweep] {name}: {SCORE} paired difference by rate {scores} → best {m['best']:g}", flush=True)
        for hp, by_value in m.get("hparam_scores", {}).items():
            values = ", ".join(f"{v}: {100 * s:+.1f}" for v, s in by_value.items())
            print(f"[sweep] {name}: {SCORE} by {hp} {values} → best {m['best_hparams'][hp]:g}", flush=True)
        for hp, best in m.get("best_joint", {}).items():
            print(
                f"[sweep] {name}: joint grid (rate × {hp}) best at lr {best['learning_rate']:g}, "
                f"{hp} {best['value']:g} ({SCORE} {100 * best['score']:+.1f})",
                flush=True,
            )
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m experiments.testbed_sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument(
        "--variant",
        default="full",
        help="the testbed's variant and family (`testbed.parse_arg`): full, smoke, countdown, smoke,countdown",
    )
    p.add_argument("--methods", default=",".join(testbed.METHODS), help="comma-separated")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds")
    p.add_argument("--rates", default="", help="comma-separated rates for every method (default: each method's grid)")
    p.add_argument(
        "--hparam",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="sweep a recipe hyperparameter of each method named, at its chosen rate (repeatable)",
    )
    p.add_argument("--joint", action="store_true", help="with --rates and --hparam: every value at every rate")
    a = p.parse_args(argv)
    variant, _ = testbed.parse_arg(a.variant)
    if variant not in ("full", "smoke"):
        p.error(f"--variant {a.variant!r}: the sweep runs the full or smoke variant (of either family)")
    if a.joint and not (a.rates and a.hparam):
        p.error("--joint needs --rates and --hparam")
    methods = [m for m in a.methods.split(",") if m]
    rates = tuple(float(r) for r in a.rates.split(",") if r)
    hparams = {}
    for spec in a.hparam:
        name, _, values = spec.partition("=")
        if not name or not values:
            p.error(f"--hparam {spec!r}: NAME=V1,V2")
        hparams[name] = tuple(float(v) for v in values.split(",") if v)
    c = get_config(
        a.variant,
        methods=methods,
        seeds=[int(s) for s in a.seeds.split(",") if s],
        grids={m: rates for m in methods} if rates else None,
        hparam_grids={m: hparams for m in methods} if hparams else None,
        joint=a.joint,
    )
    testbed.set_run_dir(c, a.run_dir)
    return run(c)


if __name__ == "__main__":
    main(sys.argv[1:])
