"""``register_*``: add a part to UPGE without editing the library.

A part is a function of the loss builder's context ``c`` (`PartContext`) and
its keyword arguments, registered under a name that recipes use in
``part(name, **kwargs)``. The registries are the dicts of `_part_tables`
(``STABILISERS``, ``REFERENCES``, ``ADVANTAGES``, ``GATE_PARTS``); these
functions wrap them, add the part's `Needs` declaration and remember where a
user's part comes from (``module:qualname``), so that a recipe recorded with
`recipe_to_dict` can be rebuilt in a new process (which imports that module,
whose top level registers the part again).

What a part function may read from ``c``:

| attribute | shape | what |
|---|---|---|
| ``c.mask`` | ``[B, T]`` | response tokens (float) |
| ``c.get(key)`` | ``[B, ...]`` | a batch array (declare ``key`` in ``Needs.batch``) |
| ``c.rewards`` | ``[B]`` | the term's sequence rewards (KL-in-reward folded in) |
| ``c.token_rewards`` | ``[B, T]`` | the same, on the tokens |
| ``c.group_size`` | int | rows per question ``G`` (rows contiguous) |
| ``c.rows`` | ``[B]`` | advantages: the rows the estimator normalises over |
| ``c.logp`` | ``[B, T]`` | ``sg(log π_θ)`` (stabilisers, references, policy advantages) |
| ``c.adv``, ``c.ref`` | ``[B, T]`` | stabilisers: the advantage and ``log π_ref`` |
| ``c.entropy`` | ``[B, T]`` | ``sg(H)`` when the step passes entropies |
"""

from __future__ import annotations

import importlib
from typing import Callable

from upt_jax.upge import _objective
from upt_jax.upge import _part_tables as _tables
from upt_jax.upge._needs import NEEDS, Declaration, Needs

PartContext = _tables.PartContext

_REGISTRIES = {
    "stabiliser": _tables.STABILISERS,
    "reference": _tables.REFERENCES,
    "advantage": _tables.ADVANTAGES,
    "gate": _tables.GATE_PARTS,
}
KINDS = tuple(_REGISTRIES)

# (kind, name) -> 'module:qualname' of each part registered through register_*
_IMPORTS: dict[tuple[str, str], str] = {}


def _import_path(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


def _register(kind: str, name: str, fn: Callable, entry, needs: Declaration, overwrite: bool) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {kind} needs a non-empty string name, not {name!r}")
    if not callable(fn):
        raise TypeError(f"{kind} {name!r}: {fn!r} is not callable")
    if not (isinstance(needs, Needs) or callable(needs)):
        raise TypeError(f"{kind} {name!r}: needs must be an upge.Needs (or a function of the kwargs returning one)")
    registry = _REGISTRIES[kind]
    if name in registry and not overwrite:
        where = _IMPORTS.get((kind, name), "upt_jax.upge")
        raise ValueError(
            f"{kind} {name!r} is already registered (from {where}); choose another name or pass "
            "overwrite=True to replace it"
        )
    registry[name] = entry
    NEEDS[kind][name] = needs
    _IMPORTS[(kind, name)] = _import_path(fn)


def register_stabiliser(
    name: str, fn: Callable, *, needs: Declaration = Needs(), value: Callable | None = None, overwrite: bool = False
) -> None:
    """Registers a stabiliser ``1_stable``: ``fn(c, **kw) -> (w [B, T], clipped [B, T])``.

    Math: the surrogate's token term is ``−sg(w · Â) · exp(log π_θ − sg(log π_ref))``;
    ``clipped`` (0/1) is logged as ``clip_frac``. ``value(v, w, c, **kw)`` gives the
    logged objective's likelihood factor after this stabiliser, from ``v = π_θ/π_ref``
    (default ``v · w``: a weight).

    Args:
      name: the part's name in ``part(name, ...)``.
      fn: the stabiliser (see the module docstring for what ``c`` holds).
      needs: what it reads (`Needs`).
      value: the objective's factor; default ``v · w``.
      overwrite: replace a part registered under ``name`` (else that is an error).
    """
    _register("stabiliser", name, fn, fn, needs, overwrite)
    _objective.STABILISER_VALUES[name] = value or _objective._value_weight  # pylint: disable=protected-access


def register_reference(name: str, fn: Callable, *, needs: Declaration = Needs(), overwrite: bool = False) -> None:
    """Registers a reference ``π_ref``: ``fn(c, **kw) -> log π_ref [B, T]`` (no gradient).

    Math: the surrogate's factor is ``exp(log π_θ − sg(log π_ref))`` (``π_ref = π_θ``
    gives ``∇ log π_θ``).

    Args:
      name: the part's name.
      fn: the reference.
      needs: what it reads (`Needs`), e.g. ``Needs(('old_logp',))``.
      overwrite: replace a part registered under ``name``.
    """
    _register("reference", name, fn, fn, needs, overwrite)


def register_advantage(
    name: str, fn: Callable, *, needs: Declaration = Needs(), uses_policy: bool = False, overwrite: bool = False
) -> None:
    """Registers an advantage estimator: ``fn(c, **kw) -> Â [B] or [B, T]`` (no gradient).

    Math: e.g. a group baseline ``Â_i = r_i − mean_{j ∈ g(i)} r_j`` reads
    ``c.rewards [B]``, ``c.group_size`` and ``c.rows`` and declares
    ``Needs(('rewards',), groups=2)``. Estimators are computed once on the whole batch
    (``prepare``) unless ``uses_policy`` (then per micro-batch, from ``c.logp``).

    Args:
      name: the part's name.
      fn: the estimator.
      needs: what it reads (`Needs`).
      uses_policy: it reads the current policy's log-probs ``c.logp [B, T]``.
      overwrite: replace a part registered under ``name``.
    """
    _register("advantage", name, fn, (fn, bool(uses_policy)), needs, overwrite)


def register_gate(name: str, fn: Callable, *, needs: Declaration = Needs(), overwrite: bool = False) -> None:
    """Registers a gate: ``fn(c, **kw) -> g [B]``, a per-row weight of the term's rows.

    Math: the term's rows are weighted by ``sg(g_i)``; rows with ``g_i = 0`` also
    leave its denominator ``D = Σ_i 1[g_i > 0] d_i``.

    Args:
      name: the part's name.
      fn: the gate.
      needs: what it reads (`Needs`), e.g. ``Needs(('rewards',), groups=1)``.
      overwrite: replace a part registered under ``name``.
    """
    _register("gate", name, fn, fn, needs, overwrite)


def registered(kind: str) -> tuple[str, ...]:
    """Names of the parts of ``kind`` in its registry (library and user parts)."""
    return tuple(_REGISTRIES[kind])


def library_parts(kind: str) -> tuple[str, ...]:
    """Names of the library's parts of ``kind`` (those not added through ``register_*``)."""
    return tuple(n for n in _REGISTRIES[kind] if (kind, n) not in _IMPORTS)


def user_part(kind: str, name: str) -> str | None:
    """``'module:qualname'`` of a part registered through ``register_*``; None for the library's."""
    return _IMPORTS.get((kind, name))


def ensure_part(kind: str, name: str, path: str | None) -> None:
    """Makes part ``name`` of ``kind`` available, importing ``path``'s module if needed.

    ``path`` is the ``'module:qualname'`` recorded with the part (None: a library part).
    Importing the module must register the part (``register_*`` at its top level).
    """
    registry = _REGISTRIES[kind]
    if name not in registry and path:
        module = path.split(":", 1)[0]
        if module == "__main__":
            raise ValueError(
                f"{kind} {name!r} was registered in __main__ (a notebook or script), which a new process "
                "cannot import: define and register it in an importable module"
            )
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ValueError(
                f"{kind} {name!r}: its module {module!r} (recorded as {path!r}) cannot be imported: {e}"
            ) from e
        if name not in registry:
            raise ValueError(
                f"{kind} {name!r}: importing {module!r} did not register it; call upge.register_{kind}"
                f"({name!r}, ...) at the top level of that module"
            )
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; registered: {sorted(registry)}")
    have = _IMPORTS.get((kind, name))
    if path is not None and have != path:
        raise ValueError(
            f"{kind} {name!r} is registered from {have or 'upt_jax.upge'}, but the recipe was recorded "
            f"with the one from {path}"
        )
