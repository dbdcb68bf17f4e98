"""`requirements`: what a recipe needs from whoever trains it, from its parts' `Needs`.

A trainer reads this instead of matching part or recipe names: a frozen
reference model when ``ref_logp`` is read, a teacher for ``teacher_logp`` /
``teacher_logits``, a critic for ``values``, demonstrations when a term has
demo rows, groups of at least ``k`` rows per question, preference pairs.
"""

from __future__ import annotations

import dataclasses

from upt_jax.upge import _registry
from upt_jax.upge._aggregation import AGGREGATION_MODES
from upt_jax.upge._needs import Needs, declared
from upt_jax.upge._parts import KLPenalty, Part, Recipe


@dataclasses.dataclass(frozen=True)
class GroupUse:
    """A part that reads statistics over a question's group of rows.

    Attributes:
      term: the term's name.
      role: ``'rollout'`` or ``'demo'``.
      kind: ``'advantage'`` or ``'gate'``.
      part: the `Part`.
      min_rows: rows of the group it needs to carry any signal (`Needs.groups`).
      with_demo: the group's demonstration counts among those rows (an advantage shared
        by the term's rollout and demo rows, or one with ``rows='all'``).
    """

    term: str
    role: str
    kind: str
    part: Part
    min_rows: int
    with_demo: bool


@dataclasses.dataclass(frozen=True)
class CriticUse:
    """The part that reads a critic's ``values [B, T]`` and its term's KL-in-reward, if any."""

    part: Part
    kl: KLPenalty | None


@dataclasses.dataclass(frozen=True)
class Requirements:
    """What a recipe needs, collected from its parts' `Needs` (see `requirements`).

    Attributes:
      batch: every batch key read besides ``mask``.
      demos: some term has demonstration rows (``is_demo [B]``).
      groups: the parts that read a question's group (`GroupUse`).
      pairs: rows come as (chosen, rejected) pairs.
      entropy: some part or term reads the policy's token entropies.
      vocab_part: the part that reads the vocabulary-level log-probs, if any.
      critic: the part that reads ``values`` (`CriticUse`), if any.
      thresholds: ``(gate part, γ)`` of each pass-rate threshold a gate routes on.
    """

    batch: frozenset[str]
    demos: bool
    groups: tuple[GroupUse, ...]
    pairs: bool
    entropy: bool
    vocab_part: Part | None
    critic: CriticUse | None
    thresholds: tuple[tuple[Part, float], ...]

    @property
    def reference(self) -> bool:
        """A frozen reference model's ``ref_logp`` is read (KL, DPO/IPO)."""
        return "ref_logp" in self.batch

    @property
    def teacher_logits(self) -> bool:
        """A teacher's logits over the vocabulary are read (forward-KL distillation)."""
        return "teacher_logits" in self.batch

    @property
    def teacher_logp(self) -> bool:
        """A teacher's token log-probs are read (on-policy distillation)."""
        return "teacher_logp" in self.batch


def _needs(kind: str, p: Part) -> Needs:
    if p.name not in _registry.registered(kind):
        raise ValueError(f"unknown {kind} {p.name!r} in part {p}; registered: {sorted(_registry.registered(kind))}")
    kw = {k: v for k, v in p.kw.items() if not (kind == "advantage" and k == "rows")}
    return declared(kind, p.name, kw)


def requirements(recipe: Recipe) -> Requirements:
    """What ``recipe`` needs: batch keys, frozen models, demonstrations, groups, pairs.

    Math: the union of its parts' `Needs`, plus each term's regularisers (a KL penalty
    ``β k(log π_θ, log π_ref)`` reads ``ref_logp [B, T]``; in the reward also
    ``old_logp [B, T]``; an entropy bonus ``−c_H H`` reads ``H [B, T]``). Pure: reads
    only the recipe and the registries.

    Args:
      recipe: the `Recipe`.

    Returns:
      The `Requirements`.

    Raises:
      ValueError: a part is not registered, or an aggregation mode is unknown.
    """
    keys, groups, thresholds = set(), [], []
    pairs = entropy = False
    vocab = critic = None
    demos = any(t.demo is not None for t in recipe.terms)
    if demos:
        keys.add("is_demo")
    for term in recipe.terms:
        if term.kl is not None:
            keys.add("ref_logp")
            if term.kl.where == "reward":
                keys.add("old_logp")
        entropy = entropy or bool(term.entropy_coef)
        for role, parts in term.roles():
            if parts.aggregation.name not in AGGREGATION_MODES:
                raise ValueError(f"unknown aggregation {parts.aggregation.name!r}; one of {AGGREGATION_MODES}")
            used = [("stabiliser", s) for s in parts.stabiliser] + [
                ("reference", parts.reference),
                ("advantage", parts.advantage),
            ]
            if parts.gate is not None:
                used.append(("gate", parts.gate))
            for kind, p in used:
                n = _needs(kind, p)
                keys.update(n.batch)
                pairs, entropy = pairs or n.pairs, entropy or n.entropy
                if n.vocab and vocab is None:
                    vocab = p
                if "values" in n.batch and critic is None:
                    critic = CriticUse(p, term.kl if term.kl is not None and term.kl.where == "reward" else None)
                if n.threshold is not None and n.threshold in p.kw:
                    thresholds.append((p, float(p.kw[n.threshold])))
                if n.groups:
                    shared = kind == "advantage" and (
                        p.kw.get("rows") == "all" or any(q.advantage == p for r, q in term.roles() if r != role)
                    )
                    groups.append(GroupUse(term.name, role, kind, p, n.groups, shared))
    return Requirements(frozenset(keys), demos, tuple(groups), pairs, entropy, vocab, critic, tuple(thresholds))
