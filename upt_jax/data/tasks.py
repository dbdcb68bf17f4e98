"""Task families: the public, registrable API of synthetic verifiable tasks.

A task family is a value: a name, its tiers (each with a level that says what it is for), a
generator of records by ``(tier, seed, index)``, the verifier that scores an answer, and an
optional generator of pre-training documents. Pre-training (``data.source=corpus``), every
regime (``data.source=synthetic``), evaluation (``upt eval --tiers``) and the paper comparison
read tiers through this module only, so a family defined in a user module works everywhere the
built-in ones do::

    import random
    from upt_jax.data import tasks

    def make(tier, seed, index):
        rng = random.Random(f"count/{seed}/{tier}/{index}")
        n = {"count_3": 3, "count_5": 5}[tier]
        word = "".join(rng.choice("xy") for _ in range(n))
        k = word.count("x")
        return dict(question=f"How many x in {word}?", answer=str(k),
                    demonstration=f"{k}\\n\\\\boxed{{{k}}}")

    COUNT = tasks.register_task(tasks.TaskFamily(
        name="count", tiers=(tasks.TaskTier("count_3", "base"), tasks.TaskTier("count_5", "sft")),
        make_record=make, verifier="integer"))

Tier names are global (a registry of every registered family's tiers), so a run names tiers
alone: ``--config.data.tiers=count_3,count_5``. A tier written ``"module:tier"`` imports
``module`` first (which registers its families), so a new process, such as ``upt train``
resuming a run, finds a user's family from the config alone.

Records (`TaskFamily.record`) are dicts with at least ``id``, ``question``, ``answer``,
``demonstration``, ``tier``, ``level``, ``task`` and ``verifier``; generation is seeded and
random-access (item ``i`` depends only on ``(seed, tier, i)``).

Levels (`LEVELS`) name what a tier is for in the studies: ``base`` (in the pre-training corpus;
the base model solves it), ``rl`` (partly solved: RL can sharpen it), ``sft`` (unsolved; its
demonstrations can teach it), ``ood`` (held out of post-training), ``ext`` (held out, and beyond
the depth of anything trained: it measures extrapolation, whose base rate depends on the
pre-training seed, so a base's record reports it without holding a rebuild to it). The built-in ``arith``
family keeps its historical level names (``easy``, ``medium``, ``hard``, ``ood``).

The values, `register_task` and the lookups live in `upt_jax.data.task_registry`; this module
imports it and the built-in families (so they are registered whenever it is imported) and
re-exports its API. A new *built-in* family is a module of ``upt_jax/data/`` that imports
`upt_jax.data.task_registry` (not this module: that would be an import cycle), calls
``register_task`` when imported, and is added to the imports below; the order of those imports is
the order of `task_names()`. A user's family, outside the package, imports this module as above.
"""

# the built-in families, registered when imported, in this order (that of task_names())
from upt_jax.data import synthetic  # noqa: F401  (arith)
from upt_jax.data import hinted  # noqa: F401  (arith_hint)
from upt_jax.data import countdown  # noqa: F401  (countdown)
from upt_jax.data import task_registry
from upt_jax.data.task_registry import (
    LEVELS,
    RECORD_KEYS,
    TaskFamily,
    TaskTier,
    TierSource,  # noqa: F401
    generate,
    get_task,
    register_task,
    resolve_tier,
    task_names,
    task_of,
    tier_names,
)

__all__ = [name for name in task_registry.__all__ if name != "RECORD_KEYS"]  # its API, re-exported
