"""The configs a comparison trains (`upt_jax.studies.comparison`): each arm's, for one seed, under the
comparison's budget and from its base model (`arm_config`, with `stage_settings` for a pipeline's
stages), the SFT control arms it adds (`with_sft_controls`), the run directories whose checkpoints
make an arm's trajectory (`final_run_dirs`) and the config that trains the base model (`base_config`).

Building configs only: running them is `upt_jax.studies.comparison`, the report's table of arms
`upt_jax.studies.comparison_report`; both import this module (neither is imported by it).
"""

from __future__ import annotations

import os
from typing import Mapping

__all__ = ["stage_settings", "arm_config", "base_config", "with_sft_controls", "final_run_dirs"]


def _set_dotted(c, key: str, value) -> None:
    *parents, leaf = key.split(".")
    for p in parents:
        c = c[p]
    c[leaf] = value


def _plain(x):
    return x.to_dict() if hasattr(x, "to_dict") else (dict(x) if isinstance(x, Mapping) else x)


def stage_settings(config, arm, stage: str | None = None) -> dict:
    """What one training stage of ``arm`` trains on: ``tiers``, ``learning_rate``,
    ``questions_per_step`` and ``overrides``: the budget's (and ``eval.id_tiers``) unless the arm
    sets them, then its ``stages.<stage>``'s."""
    b = config.budget
    out = dict(
        tiers=tuple(config.eval.id_tiers),
        learning_rate=float(b.learning_rate),
        questions_per_step=int(b.questions_per_step),
        overrides=(),
    )
    stages = arm.get("stages") or {}
    for src in (arm, stages.get(stage) if stage else None):
        if not src:
            continue
        if src.get("tiers"):
            out["tiers"] = tuple(src["tiers"])
        for key, cast in (("learning_rate", float), ("questions_per_step", int)):
            if src.get(key) is not None:
                out[key] = cast(src[key])
        if src is not arm:
            out["overrides"] += tuple(tuple(o) for o in src.get("overrides") or ())
    return out


def _apply_budget(c, config, seed: int, run_dir: str, steps: int, settings: Mapping) -> None:
    """One training stage ``c`` set to the comparison's budget, seed and base model."""
    b = config.budget
    c.seed = int(seed)
    c.run_dir = run_dir
    c.train.steps = int(steps)
    c.train.questions_per_step = int(settings["questions_per_step"])
    c.train.learning_rate = float(settings["learning_rate"])
    decay = int(round(float(b.get("decay_frac", 0.0)) * int(steps)))
    c.train.schedule = "wsd" if decay else "constant"  # constant, then linear to 0 over the last `decay`
    c.train.decay_steps = decay
    c.train.warmup_steps = 0
    c.rollout.n = int(b.n)
    c.rollout.max_new_tokens = int(b.max_new_tokens)
    c.rollout.temperature = float(b.temperature)
    c.data.tiers = tuple(settings["tiers"])
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
    c = _experiment(config, arm.module, arm.get("arg"))
    run_dir = os.path.join(config.run_dir, key, f"seed{seed}")
    steps = int(config.budget.steps)
    if "order" in c:  # a pipeline: the budget's steps are split over its stages
        c.run_dir = run_dir
        n = len(c.order)
        split = [steps // n + (1 if i < steps % n else 0) for i in range(n)]
        for name, s in zip(c.order, split):
            _apply_budget(c[name], config, seed, os.path.join(run_dir, name), s, stage_settings(config, arm, name))
        kind = "pipeline"
    else:
        _apply_budget(c, config, seed, run_dir, steps, stage_settings(config, arm))
        kind = "train"
    names = list(c.order) if kind == "pipeline" else [None]
    for name in names:
        s = c[name] if name else c
        if arm.get("hparams"):
            hp = s.recipe.hparams.to_dict() if hasattr(s.recipe.hparams, "to_dict") else {}
            if s.recipe.name == arm.get("hparams_recipe", s.recipe.name):
                hp.update(_plain(arm.hparams))
                s.recipe.hparams = ml_collections.ConfigDict(hp, type_safe=False)
        for k, v in tuple(arm.get("overrides") or ()) + stage_settings(config, arm, name)["overrides"]:
            _set_dotted(s, k, v)
    return kind, c


def _experiment(config, name: str, arg: str | None = None):
    """The config of ``<experiments dir>/<name>.py[:arg]`` that an arm or the base names, loaded by
    path (`upt_jax.config_files.experiment_config`, as ``upt train --config`` loads a file); the
    directory is ``config.experiments_dir`` when set, else the shipped experiments."""
    from upt_jax.config_files import experiment_config

    return experiment_config(name, arg or None, root=config.get("experiments_dir") or None)


def base_config(config):
    """The config that trains the base model into ``config.base.run_dir`` (``base.module``/``arg``
    with ``base.overrides``), when the comparison has to train it first (`comparison.ensure_base`)."""
    c = _experiment(config, config.base.module, config.base.get("arg"))
    c.run_dir = config.base.run_dir
    for k, v in config.base.get("overrides") or ():
        _set_dotted(c, k, v)
    c.log.progress = bool(config.get("progress", True))
    return c


def with_sft_controls(config):
    """``config`` with an SFT control arm ``<key>_sft_control`` for every arm that sets
    ``sft_control``: SFT on the same tiers (so the same questions, in the same order), seeds,
    steps and questions per step, at ``sft_control.learning_rate`` (default the budget's); it
    follows its arm in every table that shows the arm. Idempotent; modifies and returns ``config``.
    Raises ``ValueError`` for a control of a pipeline or of an arm that does not sample (not RL)."""
    import ml_collections

    for key in list(config.arms.keys()):
        arm = config.arms[key]
        spec = arm.get("sft_control")
        ctl = f"{key}_sft_control"
        if not spec or ctl in config.arms:
            continue
        c = _experiment(config, arm.module, arm.get("arg"))
        if "order" in c or c.get("mode") != "online":
            raise ValueError(
                f"arms.{key}.sft_control: an SFT control is for a one-stage RL arm (mode online), "
                f"not {'a pipeline' if 'order' in c else 'mode ' + repr(c.get('mode'))}"
            )
        spec = _plain(spec) if not isinstance(spec, bool) else {}
        config.arms[ctl] = ml_collections.ConfigDict(
            dict(
                label=spec.get("label", f"SFT control of {arm.label}"),
                module="sft",
                arg="",
                hparams={},
                overrides=tuple(spec.get("overrides", ())),
                seeds=tuple(arm.get("seeds") or ()),
                tiers=stage_settings(config, arm)["tiers"],
                learning_rate=float(spec.get("learning_rate", config.budget.learning_rate)),
                control_of=key,
            ),
            type_safe=False,
        )
        config.tables = tuple(
            (title, tuple(k for a in keys for k in ((a, ctl) if a == key else (a,)))) for title, keys in config.tables
        )
    return config


def final_run_dirs(kind: str, c) -> list[str]:
    """The run directories whose checkpoints make the arm's trajectory, in order."""
    if kind == "pipeline":
        return [os.path.join(c.run_dir, name) for name in c.order]
    return [c.run_dir]
