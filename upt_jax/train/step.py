"""The update step: one ``jax.jit`` with explicit shardings, donated state, exact accumulation.

An ``Objective`` splits a loss into parameter-free denominators and differentiable sums:

    L = Σ_k S_k(θ; batch) / D_k(batch)

``D_k`` is computed once on the whole batch; the batch is cut into ``M`` micro-batches of
whole groups and ``∇ Σ_k S_k(mb) / D_k`` is accumulated over them (``lax.scan``), so the
update is the same for every ``M`` and every sharding of the batch (up to float summation
order). The update is skipped (parameters and optimiser state kept, ``step`` still advances
and ``skipped=1`` is reported) when the loss or gradient is not finite, or when the pre-clip
gradient norm exceeds ``skip_grad_norm``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from upt_jax.models.logprobs import sequence_logprobs
from upt_jax.train.state import TrainState

Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Objective:
    """``denominators(batch) -> {k: D_k}`` (no parameters) and
    ``sums(model, batch) -> ({k: S_k}, metrics)`` (differentiated, row-local)."""

    denominators: Callable[[Batch], dict]
    sums: Callable[[Any, Batch], tuple[dict, dict]]
    prepare: Callable[[Batch], tuple[Batch, dict]] | None = None  # whole-batch, parameter-free


def upge_objective(recipe, *, group_size: int = 1, chunk_size: int = 128,
                   with_entropy: bool = True) -> Objective:
    """The UPGE ``recipe`` on token batches.

    Batch keys: ``tokens [B, L]``, ``attention_mask [B, L]``, ``mask [B, L]`` (1 on the tokens
    that are trained on, aligned with ``tokens``), plus what the recipe needs (``rewards [B]``,
    ``old_logp [B, L]``, ``ref_logp``, ``is_demo [B]``, ...; see ``upt_jax.upge``).
    """
    from upt_jax import upge

    def prepare(batch):
        loss_batch = {k: v for k, v in batch.items() if k not in ("tokens", "attention_mask")}
        prepared, metrics = upge.prepare(recipe, loss_batch, group_size=group_size)
        return dict(batch, **prepared), metrics

    def denominators(batch):
        return upge.denominators(recipe, _loss_view(batch), group_size=group_size)

    def sums(model, batch):
        out = sequence_logprobs(model, batch["tokens"], batch["attention_mask"], chunk_size=chunk_size,
                                return_entropy=with_entropy)
        logp, ent = out if with_entropy else (out, None)
        s, _, metrics = upge.compute_loss(recipe, logp, _loss_view(batch), group_size=group_size,
                                          entropy=ent)
        return s, metrics

    return Objective(denominators=denominators, sums=sums, prepare=prepare)


def _loss_view(batch):
    return {k: v for k, v in batch.items() if k not in ("tokens", "attention_mask")}


def place_batch(batch: Batch, mesh: Mesh | None) -> Batch:
    """Batch arrays onto ``mesh`` with rows over ``('data', 'fsdp')`` (what the jitted step expects).

    Host (numpy) arrays must hold the same global batch on every process (same data order, same
    sampling keys); each process hands over the rows of its own devices, so this also works when
    the mesh spans several processes. ``jax.Array`` s are resharded. No mesh: unchanged.
    """
    if mesh is None:
        return batch
    sharding = NamedSharding(mesh, P(("data", "fsdp")))

    def put(x):
        if isinstance(x, jax.Array):
            return jax.device_put(x, sharding)
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])

    return jax.tree.map(put, batch)


def split_microbatches(batch: Batch, num_microbatches: int, group_size: int = 1) -> Batch:
    """``[B, ...] → [M, B/M, ...]``, micro-batch ``m`` holding groups ``m, m + M, m + 2M, …``.

    Whole groups of ``group_size`` contiguous rows stay together; taking every M-th group
    keeps each device's slice of a batch-sharded array local to it.
    """
    m, g = num_microbatches, group_size

    def split(x):
        b = x.shape[0]
        if b % (m * g):
            raise ValueError(f"batch of {b} rows is not divisible into {m} micro-batches of whole "
                             f"groups of {g}")
        x = x.reshape(b // (m * g), m, g, *x.shape[1:])
        x = jnp.swapaxes(x, 0, 1)
        return x.reshape(m, b // m, *x.shape[3:])

    return jax.tree.map(split, batch)


def make_train_step(graphdef, tx: optax.GradientTransformation, objective: Objective, *,
                    num_microbatches: int = 1, group_size: int = 1,
                    skip_grad_norm: float | None = None, mesh: Mesh | None = None,
                    shardings: TrainState | None = None, donate: bool = True):
    """A jitted ``(state, batch) -> (state, metrics)``.

    Args:
      graphdef: the model's NNX graph definition.
      tx: optax transformation (gradient clipping belongs in it).
      objective: what to minimise.
      num_microbatches: ``M``; the batch must split into ``M`` sets of whole groups.
      group_size: rows per question/pair (micro-batches never split a group).
      skip_grad_norm: skip the update when the pre-clip gradient norm exceeds this.
      mesh, shardings: with a mesh, ``in_shardings``/``out_shardings`` are explicit: the state
        as ``shardings`` (from ``create_train_state``), batch arrays over ``('data', 'fsdp')``.
      donate: donate the incoming state's buffers.
    Returns:
      the jitted step. Metrics: ``loss``, ``grad_norm`` (pre-clip), ``skipped``, ``lr`` when
      the optimiser exposes it, plus the objective's metrics (means over micro-batches).
    """

    def step(state: TrainState, batch: Batch):
        metrics = {}
        if objective.prepare is not None:
            batch, prep_metrics = objective.prepare(batch)
            metrics.update(prep_metrics)
        dens = objective.denominators(batch)
        mbs = split_microbatches(batch, num_microbatches, group_size)

        def loss_fn(params, mb):
            model = nnx.merge(graphdef, params)
            sums, m = objective.sums(model, mb)
            loss = sum(jnp.where(dens[k] > 0, sums[k] / jnp.where(dens[k] > 0, dens[k], 1.0), 0.0)
                       for k in sums)
            return loss, m

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def accumulate(carry, mb):
            g_acc, l_acc = carry
            (loss, m), g = grad_fn(state.params, mb)
            g_acc = jax.tree.map(lambda a, b: a + b.astype(a.dtype), g_acc, g)
            return (g_acc, l_acc + loss), m

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
        (grads, loss), mb_metrics = jax.lax.scan(accumulate, (zeros, jnp.zeros((), jnp.float32)), mbs)
        metrics.update(jax.tree.map(lambda x: jnp.mean(x, axis=0), mb_metrics))
        grad_norm = optax.global_norm(grads)
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        if skip_grad_norm is not None:
            ok = ok & (grad_norm <= skip_grad_norm)
        grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.params)
        updates, new_opt = tx.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
        new_state = state.replace(step=state.step + 1, params=keep(new_params, state.params),
                                  opt_state=keep(new_opt, state.opt_state))
        metrics.update(loss=loss, grad_norm=grad_norm, skipped=(~ok).astype(jnp.int32))
        metrics.update({f"denominator/{k}": v for k, v in dens.items()})
        return new_state, metrics

    kw = dict(donate_argnums=(0,) if donate else ())
    if mesh is not None:
        if shardings is None:
            raise ValueError("with a mesh, pass the state shardings from create_train_state")
        data = NamedSharding(mesh, P(("data", "fsdp")))
        kw.update(in_shardings=(shardings, data), out_shardings=(shardings, NamedSharding(mesh, P())))
    return jax.jit(step, **kw)
