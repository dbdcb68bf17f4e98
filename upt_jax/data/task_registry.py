"""The registry of task families: the values (`TaskTier`, `TaskFamily`), `register_task`, and the
lookups over what has been registered (`get_task`, `resolve_tier`, `task_of`, `tier_names`,
`task_names`, `generate`, `TierSource`).

Users read all of this through `upt_jax.data.tasks`, which imports this module and every built-in
family and re-exports this API (the families and the tier syntax are described there). A built-in
family (`upt_jax.data.synthetic`: ``arith``; `upt_jax.data.hinted`: ``arith_hint``) imports *this*
module, registers itself when imported, and is imported by `upt_jax.data.tasks`, so the arrows only
point one way: families -> registry, tasks -> families and registry.
"""

from __future__ import annotations

import dataclasses
import importlib
import random
from typing import Any, Callable, Iterable, Sequence

__all__ = [
    "TaskTier",
    "TaskFamily",
    "register_task",
    "get_task",
    "task_of",
    "resolve_tier",
    "tier_names",
    "task_names",
    "generate",
    "TierSource",
    "LEVELS",
    "RECORD_KEYS",
]

LEVELS = ("base", "rl", "sft", "ood", "ext", "easy", "medium", "hard")
RECORD_KEYS = ("question", "answer", "demonstration")


@dataclasses.dataclass(frozen=True)
class TaskTier:
    """One tier of a family: its ``name`` (unique over all registered families), its ``level``
    (one of `LEVELS`) and a one-line ``doc``."""

    name: str
    level: str
    doc: str = ""

    def __post_init__(self):
        if not self.name or ":" in self.name or "," in self.name or " " in self.name:
            raise ValueError(f"tier name {self.name!r}: non-empty, without ':', ',' or spaces")
        if self.level not in LEVELS:
            raise ValueError(f"tier {self.name!r}: level {self.level!r} is not one of {LEVELS}")


@dataclasses.dataclass(frozen=True)
class TaskFamily:
    """A family of verifiable tasks.

    Attributes:
      name: the family's name (``"arith"``, ``"arith_hint"``, a user's).
      tiers: its `TaskTier` s.
      make_record: ``(tier, seed, index) -> dict`` with at least ``question``, ``answer`` (a
        string the verifier compares against) and ``demonstration`` (a worked solution ending in
        the answer the verifier extracts, e.g. ``\\boxed{42}``); other keys are kept.
      verifier: the `upt_jax.rewards.Verifier` kind that scores completions (``"integer"``,
        ``"math"``, ``"exact"``, ``"choice"``, ``"countdown"``); records carry it, and training
        and evaluation score each record with its own.
      corpus_doc: ``(rng: random.Random, tiers, template, *, seed, **options) -> str``, one pre-training
        document (or None: the family has no pre-training corpus of its own); ``options`` come
        from ``config.data.corpus`` (``demo_fraction``, ``facts_per_doc``).
      description: one paragraph for the docs.
      corpus_stream: the prefix of the documents' random streams (default
        ``"upt_jax.pretrain/<name>"``): document ``i`` of ``seed`` draws from
        ``random.Random(f"{corpus_stream}/{seed}/{i}")``.
    """

    name: str
    tiers: tuple[TaskTier, ...]
    make_record: Callable[[str, int, int], dict]
    verifier: str = "integer"
    corpus_doc: Callable[..., str] | None = None
    description: str = ""
    corpus_stream: str = ""

    @property
    def tier_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tiers)

    def level(self, tier: str) -> str:
        return self._tier(tier).level

    def tiers_at(self, *levels: str) -> tuple[str, ...]:
        """The family's tiers at any of ``levels``, in declaration order."""
        return tuple(t.name for t in self.tiers if t.level in levels)

    def _tier(self, tier: str) -> TaskTier:
        for t in self.tiers:
            if t.name == tier:
                return t
        raise KeyError(f"task {self.name!r} has no tier {tier!r}; its tiers: {self.tier_names}")

    def record(self, tier: str, seed: int, index: int) -> dict[str, Any]:
        """Item ``index`` of ``tier`` for ``seed``, with ``id``, ``tier``, ``level``, ``task``,
        ``verifier`` and ``location`` filled in."""
        spec = self._tier(tier)
        rec = dict(self.make_record(tier, seed, index))
        missing = [k for k in RECORD_KEYS if not isinstance(rec.get(k), str) or not rec.get(k)]
        if missing:
            raise ValueError(f"task {self.name!r} tier {tier!r} item {index}: make_record returned no string {missing}")
        ident = rec.get("id") or f"{tier}/{seed}/{index}"
        rec.update(id=ident, tier=tier, level=spec.level, task=self.name, verifier=self.verifier)
        rec.setdefault("location", f"synthetic:{ident}")
        rec.setdefault("chosen", None)
        rec.setdefault("rejected", None)
        return rec

    def generate(self, tier: str, n: int, seed: int = 0, start: int = 0) -> list[dict[str, Any]]:
        """Items ``start .. start + n − 1`` of ``tier``."""
        return [self.record(tier, seed, i) for i in range(start, start + n)]

    def corpus(
        self, n_docs: int, seed: int = 0, *, tiers: Sequence[str] | None = None, template: str = "zero", **options
    ) -> list[str]:
        """``n_docs`` pre-training documents (document ``i`` depends only on ``(seed, i)``) of
        ``tiers`` (default: the family's ``base``/``easy`` tiers; repeat a tier to weight it)."""
        if self.corpus_doc is None:
            raise ValueError(f"task {self.name!r} has no pre-training corpus (corpus_doc=None)")
        tiers = tuple(tiers) if tiers is not None else self.tiers_at("base", "easy")
        for t in tiers:
            self._tier(t)
        stream = self.corpus_stream or f"upt_jax.pretrain/{self.name}"
        return [
            self.corpus_doc(random.Random(f"{stream}/{seed}/{i}"), tiers, template, seed=seed, **options)
            for i in range(n_docs)
        ]


_TASKS: dict[str, TaskFamily] = {}
_TIER_OWNER: dict[str, str] = {}


def register_task(family: TaskFamily, *, replace: bool = False) -> TaskFamily:
    """Adds ``family`` to the registry (returns it). Its tier names must not belong to another
    family; ``replace=True`` re-registers a family of the same name (e.g. a reloaded module)."""
    if family.name in _TASKS and not replace and _TASKS[family.name] is not family:
        raise ValueError(f"task {family.name!r} is already registered (replace=True to re-register)")
    for t in family.tier_names:
        owner = _TIER_OWNER.get(t)
        if owner is not None and owner != family.name:
            raise ValueError(f"tier {t!r} of task {family.name!r} already belongs to task {owner!r}")
    if len(set(family.tier_names)) != len(family.tier_names):
        raise ValueError(f"task {family.name!r} names a tier twice: {family.tier_names}")
    old = _TASKS.get(family.name)
    if old is not None:
        for t in old.tier_names:
            _TIER_OWNER.pop(t, None)
    _TASKS[family.name] = family
    _TIER_OWNER.update({t: family.name for t in family.tier_names})
    return family


def _import_module_of(spec: str) -> str:
    """``"module:name"`` → imports ``module`` (it registers its families) and returns ``name``."""
    if ":" not in spec:
        return spec
    module, _, name = spec.rpartition(":")
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise KeyError(f"{spec!r}: cannot import task module {module!r} ({e})") from e
    return name


def get_task(name: str) -> TaskFamily:
    """The registered family ``name`` (``"module:name"`` imports ``module`` first)."""
    name = _import_module_of(name)
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; registered: {task_names()}")
    return _TASKS[name]


def resolve_tier(spec: str) -> str:
    """A tier name, from ``"tier"`` or ``"module:tier"`` (importing ``module``); KeyError naming
    the known tiers when none matches."""
    name = _import_module_of(spec)
    if name not in _TIER_OWNER:
        raise KeyError(f"unknown tier {spec!r}; known tiers: {', '.join(tier_names())}")
    return name


def task_of(tier: str) -> TaskFamily:
    """The family that owns ``tier`` (``"module:tier"`` accepted)."""
    return _TASKS[_TIER_OWNER[resolve_tier(tier)]]


def tier_names() -> tuple[str, ...]:
    return tuple(_TIER_OWNER)


def task_names() -> tuple[str, ...]:
    return tuple(_TASKS)


def generate(tier: str, n: int, seed: int = 0, start: int = 0) -> list[dict[str, Any]]:
    """Items ``start .. start + n − 1`` of any registered ``tier``."""
    name = resolve_tier(tier)
    return task_of(name).generate(name, n, seed, start)


class TierSource:
    """A random-access source interleaving tiers (of any families): item ``i`` is drawn from tier
    ``tiers[i % k]``. A tier named ``m`` times is weighted ``m`` times (a replay mix such as
    ``("hmul_2x1", "hmul_2x1", "hadd_2", "hadd_3")``) and its ``m`` slots draw distinct items: slot
    ``r`` (the ``r``-th occurrence of the tier) of round ``i // k`` gives item ``(i // k) · m + r``.
    ``n_per_tier`` is the rounds, so a tier named ``m`` times contributes ``m · n_per_tier`` items.
    Generated on access; use as ``make_dataset(TierSource(...))``."""

    def __init__(self, tiers: Iterable[str], n_per_tier: int, seed: int = 0):
        self.tiers = tuple(resolve_tier(t) for t in tiers)
        if not self.tiers:
            raise ValueError("no tiers")
        self.families = tuple(task_of(t) for t in self.tiers)
        self.n_per_tier, self.seed = int(n_per_tier), int(seed)
        # per slot: (how many slots name its tier, which of them it is)
        self._slots = tuple((self.tiers.count(t), self.tiers[:j].count(t)) for j, t in enumerate(self.tiers))

    def __len__(self) -> int:
        return len(self.tiers) * self.n_per_tier

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        k = len(self.tiers)
        m, r = self._slots[i % k]
        return self.families[i % k].record(self.tiers[i % k], self.seed, (i // k) * m + r)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tiers={self.tiers}, n_per_tier={self.n_per_tier}, seed={self.seed})"
