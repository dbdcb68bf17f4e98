"""Recipes as plain data: `recipe_to_dict` and `recipe_from_dict` (JSON-able, lossless).

A part is recorded by its registry name and keyword arguments; a part registered
by a user (``register_*``) also by the ``'module:qualname'`` it was registered
from, which `recipe_from_dict` imports in a new process (the module's top level
registers the part again)::

  {"format": 1, "name": "grpo_tis", "citation": "", "notes": "",
   "terms": [{"name": "pg", "coef": 1.0, "entropy_coef": 0.0, "kl": null,
              "rollout": {"stabiliser": [{"name": "ppo_clip", "kwargs": {"eps_high": 0.2, ...}}],
                          "reference": {"name": "behaviour", "kwargs": {}},
                          "advantage": {"name": "my_adv", "kwargs": {}, "import": "my_lib:my_adv"},
                          "aggregation": {"name": "token-mean", "kwargs": {}}, "gate": null},
              "demo": null}]}
"""

from __future__ import annotations

import math
from typing import Any

from upt_jax.upge import _registry
from upt_jax.upge._parts import KLPenalty, Part, Parts, Recipe, Term

FORMAT = 1
_SCALARS = (bool, int, float, str, type(None))
_SLOTS = (
    ("stabiliser", "stabiliser"),
    ("reference", "reference"),
    ("advantage", "advantage"),
    ("aggregation", None),
    ("gate", "gate"),
)


def _plain(value: Any, where: str):
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}={value!r}: recipes hold finite numbers only (JSON has no inf/nan)")
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (tuple, list)):
        return [_plain(v, where) for v in value]
    raise ValueError(
        f"{where}={value!r} ({type(value).__name__}) is not plain data (bool, int, float, str, None or a tuple of them)"
    )


def _hashable(value: Any):
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


def _part_to_dict(p: Part, kind: str | None) -> dict:
    out = {"name": p.name, "kwargs": {k: _plain(v, f"part {p.name}: {k}") for k, v in p.kwargs}}
    path = _registry.user_part(kind, p.name) if kind else None
    if path is not None:
        out["import"] = path
    return out


def _part_from_dict(d: dict, kind: str | None) -> Part:
    if kind is not None:
        _registry.ensure_part(kind, d["name"], d.get("import"))
    kw = {k: _hashable(v) for k, v in dict(d.get("kwargs", {})).items()}
    return Part(str(d["name"]), tuple(sorted(kw.items())))


def _parts_to_dict(ps: Parts | None):
    if ps is None:
        return None
    out = {}
    for slot, kind in _SLOTS:
        v = getattr(ps, slot)
        out[slot] = (
            [_part_to_dict(s, kind) for s in v]
            if slot == "stabiliser"
            else None
            if v is None
            else _part_to_dict(v, kind)
        )
    return out


def _parts_from_dict(d: dict | None):
    if d is None:
        return None
    kw = {}
    for slot, kind in _SLOTS:
        v = d.get(slot)
        kw[slot] = (
            tuple(_part_from_dict(s, kind) for s in v)
            if slot == "stabiliser"
            else None
            if v is None
            else _part_from_dict(v, kind)
        )
    return Parts(**kw)


def recipe_to_dict(recipe: Recipe) -> dict:
    """A `Recipe` as plain, JSON-able data (see the module docstring for the layout).

    Math: lossless, ``recipe_from_dict(json.loads(json.dumps(recipe_to_dict(r)))) == r``;
    the parts' functions (on ``[B, T]`` arrays) are not stored, only their names,
    keyword arguments and, for user parts, their import paths.

    Args:
      recipe: the `Recipe`.

    Returns:
      A dict of str, numbers, lists, dicts and None.

    Raises:
      ValueError: a keyword argument is not plain data.
    """
    terms = []
    for t in recipe.terms:
        kl = None if t.kl is None else {"coef": _plain(t.kl.coef, "kl.coef"), "kind": t.kl.kind, "where": t.kl.where}
        terms.append(
            {
                "name": t.name,
                "coef": _plain(t.coef, "coef"),
                "entropy_coef": _plain(t.entropy_coef, "entropy_coef"),
                "kl": kl,
                "rollout": _parts_to_dict(t.rollout),
                "demo": _parts_to_dict(t.demo),
            }
        )
    return {"format": FORMAT, "name": recipe.name, "citation": recipe.citation, "notes": recipe.notes, "terms": terms}


def recipe_from_dict(data: dict) -> Recipe:
    """The `Recipe` that `recipe_to_dict` wrote, importing the modules of user parts.

    Math: the inverse of `recipe_to_dict`: ``recipe_from_dict(recipe_to_dict(r)) == r``
    (lists back to tuples, so the recipe is hashable for ``jit``; parts act on ``[B, T]``).

    Args:
      data: the dict (e.g. from ``json.load``).

    Returns:
      The `Recipe`.

    Raises:
      ValueError: an unknown format, an unregistered part whose module does not register
        it, or a part registered from another module than the recorded one.
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT or "terms" not in data:
        raise ValueError(f"not a recorded recipe (format {FORMAT}): {str(data)[:200]}")
    terms = []
    for t in data["terms"]:
        kl = t.get("kl")
        terms.append(
            Term(
                name=t["name"],
                rollout=_parts_from_dict(t.get("rollout")),
                demo=_parts_from_dict(t.get("demo")),
                coef=t.get("coef", 1.0),
                kl=None if kl is None else KLPenalty(kl["coef"], kl["kind"], kl["where"]),
                entropy_coef=t.get("entropy_coef", 0.0),
            )
        )
    return Recipe(data["name"], tuple(terms), data.get("citation", ""), data.get("notes", ""))
