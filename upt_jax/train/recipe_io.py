"""The recipe a run trains, and its record in the run directory (``recipe.json``).

A run's recipe is one of:

* a value: ``Trainer(config, recipe=my_recipe)`` (a `upt_jax.upge.Recipe` composed in Python);
  the run's config then names it (``config.recipe.name = my_recipe.name``, no hyper-parameters);
* a registered recipe named by ``config.recipe.name`` and built with ``config.recipe.hparams``;
* the recipe recorded in ``<run_dir>/recipe.json`` under ``config.recipe.name`` (a composed
  recipe resumed by ``upt train --config ... --config.recipe.name=NAME`` in a new process; its
  user parts' modules are imported from the import paths recorded with them).

Every run writes ``recipe.json`` (`upt_jax.upge.recipe_to_dict`). A run that resumes from a
checkpoint must train the recipe it recorded: a different one is an error (`check_resumed`); so
must it keep what its ``config.json`` recorded of its model, data, rewards, teacher and seed
(`check_resumed_config`; the step count, the learning rate, and the performance and logging
settings may change).
"""

from __future__ import annotations

import copy
import json
import logging

import jax
from etils import epath

log = logging.getLogger(__name__)

RECIPE_FILE = "recipe.json"


def _registered(name: str) -> bool:
    from upt_jax.train.schema import recipe_names

    return name in recipe_names()


def _hparams(config) -> dict:
    hp = config.recipe.get("hparams")
    return dict(hp.to_dict() if hasattr(hp, "to_dict") else hp or {})


def read_recorded(run_dir):
    """The `Recipe` recorded in ``<run_dir>/recipe.json`` (its user parts' modules imported), or
    None when the run directory has none."""
    from upt_jax import upge

    path = epath.Path(run_dir) / RECIPE_FILE
    if not path.exists():
        return None
    try:
        return upge.recipe_from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{path}: the run's recorded recipe cannot be rebuilt: {e}") from e


def write_recorded(run_dir, recipe) -> None:
    """Write ``<run_dir>/recipe.json`` (process 0 only: one writer per run directory)."""
    from upt_jax import upge

    data = upge.recipe_to_dict(recipe)
    if jax.process_index() != 0:
        return
    parts = [
        p
        for t in data["terms"]
        for r in ("rollout", "demo")
        if t[r]
        for p in [*t[r]["stabiliser"], t[r]["reference"], t[r]["advantage"], t[r]["gate"]]
        if p
    ]
    for p in parts:
        if p.get("import", "").startswith("__main__:"):
            log.warning(
                "recipe %s: part %s was registered in __main__; a new process cannot import it, so "
                "this run can be resumed only from this process (define it in a module)",
                recipe.name,
                p["name"],
            )
    path, text = epath.Path(run_dir) / RECIPE_FILE, json.dumps(data, indent=2)
    if not (path.exists() and path.read_text() == text):  # a resumed run's readers never see a partial file
        path.write_text(text)


def given_or_recorded(config, recipe=None):
    """The run's recipe when it is not a registered one: ``recipe`` (checked: every part
    registered, plain data), else the recipe recorded under ``config.recipe.name`` in the run
    directory; None for a registered name (built from the config after it is validated)."""
    from upt_jax import upge

    if recipe is not None:
        if not isinstance(recipe, upge.Recipe):
            raise TypeError(f"recipe= must be an upt_jax.upge.Recipe, not {type(recipe).__name__}")
        upge.requirements(recipe)  # every part registered
        upge.recipe_to_dict(recipe)  # and recordable
        return recipe
    name = config.recipe.name
    if _registered(name):
        return None
    recorded = read_recorded(config.run_dir)
    return recorded if recorded is not None and recorded.name == name else None


def config_for(config, recipe):
    """A copy of ``config`` that names ``recipe``, so that the run directory's ``config.json`` says
    what the run trains: ``recipe.name``, and the hyper-parameters that rebuild it when the name is
    a registered recipe's (an error when they cannot: a composed recipe needs its own name)."""
    import ml_collections

    out = copy.deepcopy(config)
    hp = _hparams(config) if config.recipe.name == recipe.name else {}
    if _registered(recipe.name):
        from upt_jax import upge

        try:
            same = upge.get_recipe(recipe.name, **hp) == recipe
        except (TypeError, ValueError, KeyError):
            same = False
        if not same:
            raise ValueError(
                f"recipe {recipe.name!r} differs from the registered recipe {recipe.name!r} with "
                f"config.recipe.hparams={hp}: give the composed recipe its own name "
                f"(dataclasses.replace(recipe, name='my_{recipe.name}')) so that the run's config names it"
            )
    out.recipe.name = recipe.name
    out.recipe.hparams = ml_collections.ConfigDict(hp, type_safe=False)
    return out


def get_recipe(config, recipe=None):
    """The recipe a run of ``config`` trains: ``recipe`` when given, else ``config.recipe.name``
    built with ``config.recipe.hparams``, else the recipe recorded under that name in the run
    directory (see the module docstring)."""
    from upt_jax import upge

    if recipe is not None:
        return recipe
    name, hp = config.recipe.name, _hparams(config)
    if _registered(name):
        return upge.get_recipe(name, **hp)
    recorded = read_recorded(config.run_dir)
    if recorded is None or recorded.name != name:
        found = f"it records {recorded.name!r}" if recorded is not None else f"it has no {RECIPE_FILE}"
        raise ValueError(
            f"config.recipe.name={name!r} is neither a registered recipe nor the recipe recorded in "
            f"config.run_dir={config.run_dir!r} ({found})"
        )
    if hp:
        raise ValueError(
            f"config.recipe.hparams={hp}: recipe {name!r} is recorded in {config.run_dir}/"
            f"{RECIPE_FILE} as a value; it takes no hyper-parameters"
        )
    return recorded


# what a run trains: a run resumed from its checkpoint keeps these (a key or a dotted prefix)
# (not the learning rate: resuming the last good checkpoint at a lower rate is how a diverged run recovers)
RESUMED_KEYS = ("mode", "seed", "model", "data", "reward", "teacher")


def _fingerprint(path: str):
    """What a local file or directory holds, for telling a moved copy from other content: a
    file's SHA-256; a directory's files' relative paths and sizes. None: not a local path that exists."""
    import hashlib
    import os

    if "://" in path or not os.path.exists(path):
        return None
    if os.path.isfile(path):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    return sorted(
        (os.path.relpath(os.path.join(d, n), path), os.path.getsize(os.path.join(d, n)))
        for d, _, names in os.walk(path)
        for n in names
    )


def _same(key: str, was, now) -> bool:
    """Whether a recorded value and this run's name the same thing: equal, or two paths to the same
    content (a moved checkout or run directory); a recorded path that no longer exists cannot be
    compared, and is taken as moved (logged)."""
    if was == now:
        return True
    new = _fingerprint(now) if isinstance(was, str) and isinstance(now, str) else None
    if new is None:
        return False
    old = _fingerprint(was)
    if old is None:
        log.warning("%s: the recorded %r no longer exists; taking %r as its new place", key, was, now)
        return True
    return old == new


def check_resumed_config(run_dir, config) -> None:
    """A run resumed from ``run_dir``'s checkpoint trains what its ``config.json`` recorded: every
    key under `RESUMED_KEYS` that both configs have is unchanged (a path may move: the same file or
    directory content elsewhere, `_same`); else a ``ValueError`` naming the first difference (a changed data file or starting model would otherwise continue, or find
    finished, a run of something else: a study rerun after its settings changed). A run directory
    without a saved step, or without a readable ``config.json``, has nothing to check."""
    path = epath.Path(run_dir) / "config.json"
    if not _has_checkpoint(run_dir) or not path.exists():
        return
    from upt_jax.train.schema_keys import flatten

    try:
        was = flatten(json.loads(path.read_text()), open_keys=())
    except json.JSONDecodeError as e:
        log.warning("%s is not JSON (%s): the resumed run's config is not checked against it", path, e)
        return
    now = flatten(json.loads(config.to_json_best_effort()), open_keys=())
    for k in was:
        kept = any(k == p or k.startswith(p + ".") for p in RESUMED_KEYS)
        if kept and k in now and not _same(k, was[k], now[k]):
            raise ValueError(
                f"config.run_dir={str(run_dir)!r} holds a checkpoint of a run with {k}={was[k]!r} "
                f"(its config.json); this run has {k}={now[k]!r}. A resumed run trains what it recorded: "
                "set it back, or use a new run directory (train.steps may grow)"
            )


def _difference(a, b, path="recipe") -> str:
    """Where two recorded recipes (dicts) first differ, e.g. ``terms[0].rollout.advantage.name: 'grpo' ≠ 'rloo'``."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in [*a, *(k for k in b if k not in a)]:  # in the record's order: the name first
            if a.get(k) != b.get(k):
                return _difference(a.get(k), b.get(k), f"{path}.{k}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _difference(x, y, f"{path}[{i}]")
    return f"{path}: {a!r} ≠ {b!r}"


def _has_checkpoint(run_dir) -> bool:
    ckpts = epath.Path(run_dir) / "checkpoints"
    return ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir())


def check_resumed(run_dir, recipe) -> None:
    """A run resumed from ``run_dir``'s checkpoint trains the recipe it recorded (``recipe.json``;
    runs from before the record have none and are not checked); else a ``ValueError`` naming the
    first difference. A run directory without a saved step starts afresh: nothing to check."""
    from upt_jax import upge

    if not _has_checkpoint(run_dir):
        return
    recorded = read_recorded(run_dir)
    if recorded is None:
        return
    was, now = upge.recipe_to_dict(recorded), upge.recipe_to_dict(recipe)
    if was != now:
        raise ValueError(
            f"config.run_dir={str(run_dir)!r} holds a checkpoint of a run of recipe {recorded.name!r} "
            f"({RECIPE_FILE}); this run's recipe {recipe.name!r} differs ({_difference(was, now)}). Resume with "
            "the recorded recipe (config.recipe.name and hparams as in its config.json), or use a new run directory"
        )
