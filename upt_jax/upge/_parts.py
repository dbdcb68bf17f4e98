"""Recipe data types: a recipe is data naming the parts, not a class hierarchy.

A `Recipe` is a tuple of `Term` s; each term has its own ``(loss_sum,
denominator)`` and says, per row provenance, which `Parts` its rows use:
``rollout`` rows (on-policy samples with behaviour log-probs) and ``demo`` rows
(off-policy demonstrations, flagged by ``batch['is_demo']``). ``None`` means
rows of that provenance sit the term out. A part is a `Part`: a registered
name and its keyword arguments, e.g. ``part('ppo_clip', eps_low=0.2,
eps_high=0.28)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Part:
    """One choice of one UPGE part: a registered ``name`` and its ``kwargs``.

    Hashable (usable as a static ``jit`` argument) and printable:
    ``str(part('ppo_clip', eps_low=0.2)) == 'ppo_clip(eps_low=0.2)'``.

    Attributes:
      name: registry key, e.g. ``'ppo_clip'``, ``'grpo'``, ``'token-mean'``.
      kwargs: sorted ``(key, value)`` pairs passed to the part's function.
    """

    name: str
    kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def kw(self) -> dict:
        """The keyword arguments as a dict."""
        return dict(self.kwargs)

    def __str__(self) -> str:
        if not self.kwargs:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in self.kwargs)})"


def part(name: str, **kwargs) -> Part:
    """Builds a `Part`: ``part('grpo', eps=1e-6)``. ``None`` values are dropped.

    Args:
      name: registry key of the part.
      **kwargs: arguments of the part's function.

    Returns:
      A frozen, hashable `Part`.
    """
    return Part(name, tuple(sorted((k, v) for k, v in kwargs.items() if v is not None)))


@dataclasses.dataclass(frozen=True)
class Parts:
    """The four UPGE parts (plus an optional gate) used by one kind of row.

    Attributes:
      stabiliser: tuple of `Part` s whose weights multiply (``1_stable``).
      reference: `Part` naming ``π_ref`` (``'current' | 'behaviour' | 'unit' | 'gspo'``).
      advantage: `Part` naming the advantage estimator.
      aggregation: `Part` naming the aggregation mode (with ``max_len``,
        ``rows_per_example`` kwargs where relevant).
      gate: optional `Part` giving a per-row weight from the question's group
        (``'hpt'`` gate on the pass rate, ``'nonzero_variance'`` filter).
    """

    stabiliser: tuple[Part, ...] = (Part("none"),)
    reference: Part = Part("current")
    advantage: Part = Part("one")
    aggregation: Part = Part("token-mean")
    gate: Part | None = None


@dataclasses.dataclass(frozen=True)
class KLPenalty:
    """KL regulariser to a frozen reference model (``batch['ref_logp']``).

    Attributes:
      coef: ``β``.
      kind: estimator ``'k1' | 'k2' | 'k3' | 'k3_st'`` (see `kl_estimate`).
      where: ``'loss'`` (token terms aggregated like the policy-gradient terms)
        or ``'reward'`` (folded into the token rewards before the advantage).
    """

    coef: float
    kind: str = "k3"
    where: str = "loss"

    def __str__(self) -> str:
        return f"{self.coef}·{self.kind} in {self.where}"


@dataclasses.dataclass(frozen=True)
class Term:
    """One loss term with its own ``(loss_sum, denominator)``.

    Attributes:
      name: key of the term in the returned dicts (``'pg'``, ``'sft'``, ...).
      rollout: `Parts` of rollout rows (``None``: rollout rows are not in the term).
      demo: `Parts` of demonstration rows (``None``: demos are not in the term).
      coef: multiplies the term's sum.
      kl: optional `KLPenalty`.
      entropy_coef: entropy bonus coefficient (needs ``entropy`` in `compute_loss`).
    """

    name: str
    rollout: Parts | None = None
    demo: Parts | None = None
    coef: float = 1.0
    kl: KLPenalty | None = None
    entropy_coef: float = 0.0

    def roles(self):
        """``[(role, Parts)]`` for the row kinds present in the term."""
        return [(r, p) for r, p in (("rollout", self.rollout), ("demo", self.demo)) if p is not None]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A named post-training method: a choice of parts for each loss term.

    Attributes:
      name: recipe name, e.g. ``'grpo'``.
      terms: the loss terms; the loss is ``Σ_k S_k / D_k``.
      citation: where the method comes from.
      notes: one line on what the recipe's data must look like.
    """

    name: str
    terms: tuple[Term, ...]
    citation: str = ""
    notes: str = ""
