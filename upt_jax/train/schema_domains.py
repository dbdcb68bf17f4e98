"""The schema's building blocks: what values a config key accepts (`Domain`, built by `number`,
`choice`, `text`, `flag`, `names`, `task_tiers` and `anything`), one key (`Key`), and
`ConfigError`, which names the key of a value outside its domain (see `upt_jax.train.schema`)."""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from typing import Any, Callable, Mapping


class ConfigError(ValueError):
    """A config value outside its key's domain; the message names the ``config.`` key."""


# ----------------------------------------------------------------------------- domains
@dataclasses.dataclass(frozen=True)
class Domain:
    """The allowed values of a key.

    Attributes:
      type: what a command-line string parses to (``float``, ``int``, ``str``, ``bool``, or
        ``object`` for a Python literal).
      allowed: the text every message and ``--help`` show (``"a finite float > 0"``).
      test: ``value -> bool`` for a non-None value.
      optional: ``None`` is allowed (its meaning is in ``allowed``).
      outside: example values outside the domain (the schema test walks them).
    """

    type: Any
    allowed: str
    test: Callable[[Any], bool]
    optional: bool = False
    outside: tuple = ()

    def __contains__(self, value) -> bool:
        if value is None:
            return self.optional
        try:
            return bool(self.test(value))
        except (TypeError, ValueError):
            return False


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def number(
    kind=float, *, lo=None, hi=None, lo_open=False, hi_open=False, none: str = "", also: tuple = (), also_text: str = ""
) -> Domain:
    """Finite numbers of ``kind`` (``int``: integers only) within the bounds; ``none``: ``None``
    is allowed and means this; ``also``: extra allowed values (e.g. ``-1``), described by ``also_text``."""
    if lo is not None and hi is not None:
        bounds = f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    elif lo is not None:
        bounds = f" {'>' if lo_open else '≥'} {lo}"
    elif hi is not None:
        bounds = f" {'<' if hi_open else '≤'} {hi}"
    else:
        bounds = ""
    allowed = ("an int" if kind is int else "a finite float") + bounds
    allowed += f", or {also_text}" if also_text else ""
    allowed += f", or None ({none})" if none else ""

    def test(v):
        if v in also and _is_int(v) == _is_int(also[0]):
            return True
        if not (_is_int(v) if kind is int else _is_real(v)) or not math.isfinite(v):
            return False
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return hi is None or (v < hi if hi_open else v <= hi)

    outside = []
    if lo is not None:
        outside.append(lo if lo_open else lo - 1)
    if hi is not None:
        outside.append(hi if hi_open else hi + 1)
    if kind is float:
        outside += [math.nan, math.inf]
    if not none:
        outside.append(None)
    outside = [v for v in outside if v not in also]
    return Domain(kind, allowed, test, bool(none), tuple(outside))


def choice(values, *, none: str = "") -> Domain:
    """One of ``values`` (strings)."""
    values = tuple(values)
    allowed = "one of " + ", ".join(map(str, values)) + (f", or None ({none})" if none else "")
    return Domain(
        str, allowed, lambda v: v in values, bool(none), ("no_such_" + str(values[0]),) + (() if none else (None,))
    )


def text(*, nonempty: bool = False, none: str = "") -> Domain:
    """A string (``nonempty``: not blank)."""
    allowed = ("a non-empty string" if nonempty else "a string") + (f", or None ({none})" if none else "")
    outside = ((" ",) if nonempty else ()) + (() if none else (None,))
    return Domain(str, allowed, lambda v: isinstance(v, str) and (not nonempty or bool(v.strip())), bool(none), outside)


def regex() -> Domain:
    """A non-empty string that compiles as a Python regex."""
    import re

    def test(v):
        if not isinstance(v, str) or not v.strip():
            return False
        try:
            return re.compile(v) is not None
        except re.error:
            return False

    return Domain(str, "a non-empty Python regex", test, False, (" ", "(", None))


def flag() -> Domain:
    return Domain(bool, "True or False", lambda v: isinstance(v, bool), False, (None, "yes"))


def names(valid, what: str) -> Domain:
    """A non-empty tuple (or list) of names from ``valid``."""
    valid = tuple(valid)
    return Domain(
        tuple,
        f"a non-empty tuple of {what}: " + ", ".join(valid),
        lambda v: isinstance(v, (tuple, list)) and len(v) > 0 and all(x in valid for x in v),
        False,
        ((), ("no_such_tier",), None),
    )


def task_tiers() -> Domain:
    """A non-empty tuple of registered task tiers (`upt_jax.data.tasks`: any family's tier names, or
    ``module:tier``, which imports a user's task module)."""
    from upt_jax.data import tasks

    def known(t) -> bool:
        try:
            tasks.resolve_tier(t)
            return True
        except (KeyError, TypeError):
            return False

    return Domain(
        tuple,
        "a non-empty tuple of task tiers (upt_jax.data.tasks; 'module:tier' imports a user's "
        "task module): " + ", ".join(tasks.tier_names()),
        lambda v: isinstance(v, (tuple, list)) and len(v) > 0 and all(known(x) for x in v),
        False,
        ((), ("no_such_tier",), None),
    )


def anything(kind=object, allowed: str = "any value") -> Domain:
    return Domain(kind, allowed, lambda v: True, True, ())


def data_path_test(v) -> bool:
    if isinstance(v, (str, os.PathLike)):
        return True
    return isinstance(v, (tuple, list)) and all(isinstance(p, (str, os.PathLike)) for p in v)


def reward_functions_test(v) -> bool:
    return isinstance(v, (tuple, list)) and all(isinstance(f, str) and f.strip() for f in v)


def weights_test(v) -> bool:
    return isinstance(v, (tuple, list)) and all(_is_real(w) and math.isfinite(w) for w in v)


def streams_test(v) -> bool:
    if isinstance(v, str):
        return v == "auto" or (v.isdigit() and int(v) >= 1)
    return _is_int(v) and v >= 1


def open_dict(what: str) -> Domain:
    """An open dict: a mapping (its entries are checked against ``Key.entries``)."""
    return Domain(
        dict,
        f"a dict of {what}",
        lambda v: isinstance(v, Mapping) or hasattr(v, "to_dict"),
        False,
        ({"no_such_key": 1},),
    )


@dataclasses.dataclass(frozen=True)
class Key:
    """One config key.

    Attributes:
      path: dotted, relative to the experiment config (``"train.learning_rate"``,
        ``"recipe.hparams.kl_coef"``).
      domain: its type and allowed values.
      doc: one line.
      default: ``base_config()``'s value (a section key: the value its experiments use).
      entries: open dicts only: ``config -> {name: Key}``, the entries this config may set.
      section: the key belongs to an optional section (``reward_model``, ``star``), present
        only in configs of the modes that read it.
      only_with: a recipe hyper-parameter read only with this ``gate`` (HPT's gate keywords).
    """

    path: str
    domain: Domain
    doc: str
    default: Any = None
    entries: Callable[[Any], dict] | None = None
    section: str = ""
    only_with: str = ""

    @property
    def type(self) -> str:
        t = self.domain.type
        name = {float: "float", int: "int", str: "str", bool: "bool", tuple: "tuple", dict: "dict"}.get(t, "literal")
        return name + (" | None" if self.domain.optional and t is not object else "")

    def check(self, value, prefix: str = "config.") -> None:
        """Raises ``ConfigError`` naming ``prefix + path`` when ``value`` is outside the domain."""
        if value not in self.domain:
            raise ConfigError(f"{prefix}{self.path}={value!r}: must be {self.domain.allowed} ({self.doc})")


def plain(v):
    return v.to_dict() if hasattr(v, "to_dict") else v
