"""What each part reads: one `Needs` declaration per registered part.

A part's function reads the batch through its context (``c.get('rewards')``,
``c.rewards``, ``c.group_size``); its `Needs` says so up front, so that a trainer
knows what to provide (a frozen reference model for ``ref_logp``, a teacher for
``teacher_logp`` / ``teacher_logits``, a critic for ``values``, groups of rows
per question) without matching part names. `requirements` (in `_requirements`)
collects them for a whole recipe.

Declarations of the built-in parts are in `NEEDS` below; `register_*` (in
`_registry`) adds those of new parts. A part in a registry dict with no
declaration is an error when a recipe using it is inspected.
"""

from __future__ import annotations

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Needs:
    """What one part reads, beyond ``mask [B, T]`` and the current log-probs.

    Attributes:
      batch: batch keys it reads, e.g. ``('rewards', 'old_logp')`` (``rewards [B]``,
        ``old_logp [B, T]``, ``ref_logp [B, T]``, ``values [B, T]``,
        ``teacher_logp [B, T]``, ``teacher_logits [B, T, V]``, ...; see `_loss`).
      groups: 0 for a row-local part; ``k ≥ 1`` when it reads statistics over the
        rows of a question's group (rows contiguous, ``group_size`` per question)
        and needs at least ``k`` of them to carry any signal (a group baseline
        ``r − mean_g`` is 0 on a group of one row: ``k = 2``).
      pairs: rows come as (chosen, rejected) pairs (``group_size = 2``).
      vocab: reads the log-softmax over the vocabulary (``logp [B, T, V]``).
      entropy: reads the policy's token entropies ``H [B, T]``.
      threshold: the keyword argument holding a pass-rate threshold ``γ`` the part
        routes on (``P > γ``); a valid ``γ`` satisfies ``0 ≤ γ < 1``.
    """

    batch: tuple[str, ...] = ()
    groups: int = 0
    pairs: bool = False
    vocab: bool = False
    entropy: bool = False
    threshold: str | None = None


# A declaration is a `Needs`, or a function of the part's keyword arguments returning one
# (for parts whose inputs depend on them).
Declaration = Needs | Callable[..., Needs]

_R = ("rewards",)
_OLD = ("old_logp",)


def _entropy_weight(positive_only=False, **_):
    return Needs(batch=_R if positive_only else (), entropy=True)


NEEDS: dict[str, dict[str, Declaration]] = {
    "stabiliser": {
        "none": Needs(),
        "ppo_clip": Needs(),
        "dual_clip": Needs(),
        "cispo": Needs(_OLD),
        "gspo_clip": Needs(_OLD),
        "tis": Needs(("old_logp", "rollout_logp")),
        "icepop": Needs(("old_logp", "rollout_logp")),
        "policy_shaping": Needs(),
        "entropy_weight": _entropy_weight,
    },
    "reference": {
        "current": Needs(),
        "behaviour": Needs(_OLD),
        "unit": Needs(),
        "gspo": Needs(_OLD),
    },
    "advantage": {
        "one": Needs(),
        "reinforce": Needs(_R),
        "sign": Needs(_R),
        "grpo": Needs(_R, groups=2),
        "dr_grpo": Needs(_R, groups=2),
        "rloo": Needs(_R, groups=2),
        "remax": Needs(("rewards", "baseline_rewards")),
        "reinforce_pp": Needs(_R),
        "reinforce_pp_baseline": Needs(_R, groups=2),
        "process": Needs(("step_rewards", "step_mask"), groups=1),
        "gae": Needs(("rewards", "values")),
        "teacher_probs": Needs(("teacher_logits",), vocab=True),
        "teacher_log_ratio": Needs(("teacher_logp",)),
        "dpo": Needs(("ref_logp",), pairs=True),
        "ipo": Needs(("ref_logp",), pairs=True),
        "simpo": Needs(pairs=True),
        "orpo": Needs(pairs=True),
    },
    "gate": {
        "hpt": Needs(_R, groups=1, threshold="gamma"),
        "nonzero_variance": Needs(_R, groups=2),
        "correct": Needs(_R),
    },
}


def declared(kind: str, name: str, kwargs: dict | None = None) -> Needs:
    """The `Needs` of registered part ``name`` of ``kind`` (with its keyword arguments).

    Math: none; ``declared('advantage', 'grpo') = Needs(('rewards',), groups=2)``:
    the part reads ``rewards [B]`` and a group of at least 2 rows.

    Args:
      kind: ``'stabiliser' | 'reference' | 'advantage' | 'gate'``.
      name: the part's registry name.
      kwargs: the part's keyword arguments (for declarations that depend on them).

    Returns:
      The part's `Needs`.

    Raises:
      KeyError: the part has no declaration.
    """
    table = NEEDS[kind]
    if name not in table:
        raise KeyError(
            f"{kind} {name!r} declares no needs: register it with register_{kind}(name, fn, "
            f"needs=upge.Needs(...)) (declared {kind}s: {sorted(table)})"
        )
    d = table[name]
    return d if isinstance(d, Needs) else d(**(kwargs or {}))


def group_baseline(name: str, kwargs: dict | None = None) -> bool:
    """Advantage ``name`` compares a row's reward with its group's (``groups ≥ 2``, reads ``rewards``):
    its ``zero_var_frac`` (groups whose rewards are all equal, so ``Â = 0``) is logged."""
    n = declared("advantage", name, kwargs)
    return n.groups >= 2 and "rewards" in n.batch
