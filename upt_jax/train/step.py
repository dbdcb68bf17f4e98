"""The update step: one ``jax.jit`` with explicit shardings, donated state, exact accumulation.

An ``Objective`` splits a loss into parameter-free denominators and differentiable sums:

    L = Σ_k S_k(θ; batch) / D_k(batch)

``D_k`` is computed once on the whole batch; the batch is cut into ``M`` micro-batches of
whole groups and ``∇ Σ_k S_k(mb) / D_k`` is accumulated over them (``lax.scan``), so the
update is the same for every ``M`` and every sharding of the batch (up to float summation
order). The update is skipped (parameters and optimiser state kept, ``step`` still advances
and ``skipped=1`` is reported) when the loss or gradient is not finite, when the updated
parameters or optimiser state are not finite (e.g. a NaN learning rate), when the update is
larger than ``skip_update_ratio`` times the parameters, or when the pre-clip gradient norm
exceeds ``skip_grad_norm``.
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

from upt_jax.models.logprobs import sequence_logprobs, shared_prompt_logprobs
from upt_jax.models.vocab_logprobs import teacher_logits, vocab_logprobs  # noqa: F401 (public here too)
from upt_jax.train.batching import PACKED_KEYS, pack, unpack
from upt_jax.train.distill import (
    forward_kl_value,
    teacher_inputs,  # noqa: F401 (public here too)
    teacher_probs_part,
    without_top_k,
)
from upt_jax.train.mismatch import finish_mismatch, over_microbatches, rollout_mismatch
from upt_jax.train.state import TrainState, trainable_split

Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Objective:
    """``denominators(batch) -> {k: D_k}`` (no parameters) and
    ``sums(model, batch) -> ({k: S_k}, metrics)`` (differentiated, row-local)."""

    denominators: Callable[[Batch], dict]
    sums: Callable[[Any, Batch], tuple[dict, dict]]
    prepare: Callable[[Batch], tuple[Batch, dict]] | None = None  # whole-batch, parameter-free


def upge_objective(
    recipe,
    *,
    group_size: int = 1,
    chunk_size: int = 128,
    with_entropy: bool = True,
    logits_remat: str = "auto",
    temperature: float = 1.0,
    share_prompt: bool = False,
) -> Objective:
    """The UPGE ``recipe`` on token batches.

    Batch keys: ``tokens [B, L]``, ``attention_mask [B, L]``, ``mask [B, L]`` (1 on the tokens
    that are trained on, aligned with ``tokens``), plus what the recipe needs (``rewards [B]``,
    ``old_logp [B, L]``, ``ref_logp``, ``is_demo [B]``, ``teacher_logp [B, L]``, ...; see
    ``upt_jax.upge``).

    Packed batches (``upt_jax.train.batching.pack_sequences``): with ``packed_tokens``,
    ``packed_segment_ids``, ``packed_positions [N, L_pack]`` and ``pack_index``, ``pack_valid
    [B, L]`` in the batch, the model runs on the packed rows and the token log-probs (and
    entropies) are gathered back to ``[B, L]``; the loss is then computed exactly as without
    packing (the gradient flows back through the gather). Not for vocabulary-level recipes.

    Vocabulary-level recipes (forward-KL distillation, ``distill_fkl``) get the student's log-softmax
    over the vocabulary instead of token log-probs (``vocab_logprobs``, at the recipe's temperature
    ``τ``) and need ``teacher_logits`` aligned with ``tokens`` (``teacher_logits``): either dense
    ``[B, L, V]``, or the teacher's top-``k`` logits ``[B, L, k]`` with their vocabulary ids
    ``teacher_ids [B, L, k]`` (then the student's log-probs are gathered at those ids in position
    chunks, so no ``[B, L, V]`` array is held, and ``p_T`` is renormalised over the ``k`` entries,
    which is what the recipe's ``top_k`` means). Logged: ``distill/forward_kl``
    ``= mean_t Σ_v p_T(v) (log p_T(v) − log q_θ(v))``; with ``teacher_logp``,
    ``distill/reverse_kl`` ``= mean_t (log π_θ(o_t) − log π_T(o_t))`` on the batch's tokens.

    ``logits_remat`` (``"auto"``, ``"always"``, ``"never"``): whether the token log-probs are
    computed in rematerialised chunks (see ``upt_jax.models.logprobs.token_logprobs``).

    ``temperature`` ``τ``: the policy being trained is ``π_θ^τ = softmax(z / τ)``, the distribution
    the rollouts were sampled from (``upt_jax.sampling.policy_temperature``); its token log-probs,
    importance ratios (against the sampler's ``old_logp``, also at ``τ``) and entropies are all at
    ``τ``, as verl and TRL compute them. ``τ = 1`` for offline data. Vocabulary-level distillation
    keeps its own recipe temperature.

    ``share_prompt``: each group of ``group_size`` rows shares its prompt, and the decoder runs it
    once per group (`upt_jax.models.logprobs.shared_prompt_logprobs`; rows with ``logit_columns``,
    unpacked, ``group_size > 1``; otherwise the rows are computed whole). The caller guarantees the
    groups' prompts are equal (`upt_jax.train.rows.check_shared_prompts`).

    ``rollout_threshold [B, L]``: π_θ^τ renormalised over each token's top-k/top-p kept set (the policy
    sampled). ``rollout_logp [B, L]``: the sampler-vs-trainer mismatch is logged (`rollout_mismatch`).
    """
    from upt_jax import upge

    vocab_part = teacher_probs_part(recipe)
    sparse_recipe = without_top_k(recipe) if vocab_part is not None else None

    def pick(batch):  # teacher logits already cut to their top-k: the recipe must not cut again
        return sparse_recipe if "teacher_ids" in batch else recipe

    sft_gate = sft_gate_metric(recipe)

    def prepare(batch):
        loss_batch = _loss_view(batch)
        prepared, metrics = upge.prepare(pick(batch), loss_batch, group_size=group_size)
        if sft_gate is not None:  # the routing the loss applied, logged as it was applied
            metrics["gate/sft_frac"] = metrics[sft_gate]
        return dict(batch, **prepared), metrics

    def denominators(batch):
        return upge.denominators(pick(batch), _loss_view(batch), group_size=group_size)

    def sums(model, batch):
        mask = batch["mask"]
        if vocab_part is not None and "packed_tokens" in batch:
            raise ValueError(
                f"recipe {recipe.name}: vocabulary-level distillation does not take packed "
                "sequences (train.pack_sequences)"
            )
        if vocab_part is None:
            shared = group_size if share_prompt else 0
            out = row_logprobs(model, batch, chunk_size, with_entropy, logits_remat, temperature, shared)
            logp, ent = out if with_entropy else (out, None)
        else:
            tau = float(vocab_part.kw.get("temperature", 1.0))
            logp, ent = vocab_logprobs(
                model,
                batch["tokens"],
                batch["attention_mask"],
                ids=batch.get("teacher_ids"),
                temperature=tau,
                chunk_size=chunk_size,
            )
            ent = ent if with_entropy else None
        r = pick(batch)
        s, _, metrics = upge.compute_loss(r, logp, _loss_view(batch), group_size=group_size, entropy=ent)
        if vocab_part is None and "rollout_logp" in batch:  # online: the trainer's log π_θ vs the sampler's
            metrics.update(rollout_mismatch(logp, batch))
        if vocab_part is not None:
            top_k = teacher_probs_part(r).kw.get("top_k")
            metrics["distill/forward_kl"] = forward_kl_value(
                logp, batch["teacher_logits"], mask, temperature=tau, top_k=top_k
            )
        if "teacher_logp" in batch and vocab_part is None:
            diff = jax.lax.stop_gradient(logp) - batch["teacher_logp"]
            metrics["distill/reverse_kl"] = upge.masked_mean(diff, mask)
        return s, metrics

    return Objective(denominators=denominators, sums=sums, prepare=prepare)


def sft_gate_metric(recipe) -> str | None:
    """The metric of ``recipe``'s gate on demonstration rows (HPT's SFT branch: ``β = g(P)`` per
    question, the same for every row of a group), ``"<term>/demo/gate_mean"``: its mean over the
    batch is the fraction of the step routed to SFT, logged as ``gate/sft_frac``. None when no
    demonstration term is gated."""
    return next(
        (
            f"{t.name}/{role}/gate_mean"
            for t in recipe.terms
            for role, parts in t.roles()
            if role == "demo" and parts.gate is not None
        ),
        None,
    )


def row_logprobs(model, batch, chunk_size, with_entropy, remat="auto", temperature=1.0, share_prompt: int = 0):
    """``sequence_logprobs`` of the rows ``[B, L]`` (and entropies) at ``temperature``, on the padded
    or the packed rows (gathered back, ``unpack``), over the kept sets of ``rollout_threshold``; on
    padded rows at their ``logit_columns`` only when the batch has them (0 elsewhere).
    ``share_prompt = n > 1``: rows with ``logit_columns`` (the trailing response columns, as
    `pack_rows` makes them) come in groups of ``n`` with one prompt, run once per group
    (`shared_prompt_logprobs`)."""
    thr = batch.get("rollout_threshold")
    if share_prompt > 1 and "packed_tokens" not in batch and "logit_columns" in batch:
        return shared_prompt_logprobs(
            model,
            batch["tokens"],
            batch["attention_mask"],
            group_size=share_prompt,
            response_len=batch["logit_columns"].shape[1],
            chunk_size=chunk_size,
            temperature=temperature,
            return_entropy=with_entropy,
            remat=remat,
            kept_threshold=thr,
        )
    if "packed_tokens" not in batch:
        return sequence_logprobs(
            model,
            batch["tokens"],
            batch["attention_mask"],
            chunk_size=chunk_size,
            temperature=temperature,
            return_entropy=with_entropy,
            remat=remat,
            kept_threshold=thr,
            columns=batch.get("logit_columns"),
        )
    thr = (
        thr
        if thr is None
        else pack(thr, batch["pack_index"], batch["pack_valid"], batch["packed_tokens"].shape, -jnp.inf)
    )
    out = sequence_logprobs(
        model,
        batch["packed_tokens"],
        segment_ids=batch["packed_segment_ids"],
        positions=batch["packed_positions"],
        chunk_size=chunk_size,
        temperature=temperature,
        return_entropy=with_entropy,
        remat=remat,
        kept_threshold=thr,
    )
    return jax.tree.map(lambda x: unpack(x, batch["pack_index"], batch["pack_valid"]), out)


_MODEL_INPUTS = (
    "tokens",
    "attention_mask",
    "pack_index",
    "pack_valid",
    "rollout_threshold",
    "logit_columns",
) + PACKED_KEYS


def _loss_view(batch):
    """The batch without the model's inputs (what the loss builder reads)."""
    return {k: v for k, v in batch.items() if k not in _MODEL_INPUTS}


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


def tree_all_finite(tree) -> jax.Array:
    """``[]`` bool: every floating-point leaf of ``tree`` is finite (integer leaves and PRNG keys
    are not checked)."""
    leaves = [x for x in jax.tree.leaves(tree) if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
    if not leaves:
        return jnp.ones((), bool)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def split_microbatches(batch: Batch, num_microbatches: int, group_size: int = 1) -> Batch:
    """``[B, ...] → [M, B/M, ...]``, micro-batch ``m`` holding groups ``m, m + M, m + 2M, …``.

    Whole groups of ``group_size`` contiguous rows stay together; taking every M-th group
    keeps each device's slice of a batch-sharded array local to it. Packed rows (``PACKED_KEYS``,
    ``[N, L_pack]``) are split with groups of 1: ``pack_sequences`` put micro-batch ``m``'s
    rows at ``m, m + M, …``.
    """
    m = num_microbatches

    def split(x, g):
        b = x.shape[0]
        if b % (m * g):
            raise ValueError(f"batch of {b} rows is not divisible into {m} micro-batches of whole groups of {g}")
        x = x.reshape(b // (m * g), m, g, *x.shape[1:])
        x = jnp.swapaxes(x, 0, 1)
        return x.reshape(m, b // m, *x.shape[3:])

    return {k: jax.tree.map(lambda x: split(x, 1 if k in PACKED_KEYS else group_size), v) for k, v in batch.items()}


def _term_objectives(m: dict, sums: dict, dens: dict) -> dict:
    """A micro-batch's metrics with ``loss/<k> = S^obj_k(mb) / D_k`` (the global ``D_k``): the
    term's objective sum ``objective_sum/<k>`` when the objective logs one (``upge.compute_loss``),
    else its surrogate sum. Summed over micro-batches they give the whole batch's value exactly."""
    out = {k: v for k, v in m.items() if not k.startswith(("objective_sum/", "loss/")) and k != "objective"}
    for k in sums:
        s = m.get(f"objective_sum/{k}", jax.lax.stop_gradient(sums[k]))
        out[f"loss/{k}"] = jnp.where(dens[k] > 0, s / jnp.where(dens[k] > 0, dens[k], 1.0), 0.0)
    return out


def make_train_step(
    graphdef,
    tx: optax.GradientTransformation,
    objective: Objective,
    *,
    num_microbatches: int = 1,
    group_size: int = 1,
    skip_grad_norm: float | None = None,
    skip_update_ratio: float | None = None,
    mesh: Mesh | None = None,
    shardings: TrainState | None = None,
    donate: bool = True,
    trainable=None,
    model_hook: Callable[[Any, jax.Array], None] | None = None,
):
    """A jitted ``(state, batch) -> (state, metrics)``.

    Args:
      graphdef: the model's NNX graph definition.
      tx: optax transformation (gradient clipping belongs in it).
      objective: what to minimise.
      num_microbatches: ``M``; the batch must split into ``M`` sets of whole groups.
      group_size: rows per question/pair (micro-batches never split a group).
      skip_grad_norm: skip the update when the pre-clip gradient norm exceeds this.
      skip_update_ratio: skip the update when ``‖Δθ‖ > skip_update_ratio · ‖θ‖`` (global norms):
        a step that moves the parameters by as much as their own size is a divergence (e.g. a
        learning rate of 1e30), never a step worth keeping. ``None``: no bound.
      mesh, shardings: with a mesh, ``in_shardings``/``out_shardings`` are explicit: the state
        as ``shardings`` (from ``create_train_state``), batch arrays over ``('data', 'fsdp')``.
      donate: donate the incoming state's buffers.
      trainable: the NNX filter of the trained variables, as given to ``create_train_state``
        (e.g. ``nnx.LoRAParam``): gradients, optimiser and norms cover those only, the rest of
        ``state.params`` passes through unchanged. ``None``: every parameter.
      model_hook: ``hook(model, key)`` called on each micro-batch's merged model before the loss,
        with ``key = fold_in(fold_in(state.key, state.step), m)`` for micro-batch ``m`` (LoRA
        dropout: ``upt_jax.models.lora.set_dropout_key``).
    Returns:
      the jitted step. Metrics: ``loss`` (the method's objective ``Σ_k S^obj_k / D_k``, e.g. the
      NLL for SFT, the clipped PPO objective for GRPO; ``loss/<k>`` per term; a term whose
      objective does not log ``objective_sum/<k>`` counts its surrogate), ``surrogate`` (the
      differentiated ``Σ_k S_k / D_k``), ``grad_norm`` (pre-clip), ``skipped``, ``nonfinite``
      (the surrogate, the gradient, or the updated parameters / optimiser state held a NaN or
      inf), ``update_too_large`` (``skip_update_ratio``), ``param_norm``, ``update_norm``, ``lr``
      when the optimiser exposes it, plus the objective's metrics (means over micro-batches).
      A skipped update keeps the incoming parameters and optimiser state, so a state this step
      returns is always finite when the incoming one was.
    """

    def step(state: TrainState, batch: Batch):
        metrics = {}
        if objective.prepare is not None:
            batch, prep_metrics = objective.prepare(batch)
            metrics.update(prep_metrics)
        dens = objective.denominators(batch)
        mbs = split_microbatches(batch, num_microbatches, group_size)
        params, frozen = trainable_split(state.params, trainable)

        def loss_fn(params, mb, i):
            model = nnx.merge(graphdef, params) if frozen is None else nnx.merge(graphdef, params, frozen)
            if model_hook is not None:
                model_hook(model, jax.random.fold_in(jax.random.fold_in(state.key, state.step), i))
            sums, m = objective.sums(model, mb)
            loss = sum(jnp.where(dens[k] > 0, sums[k] / jnp.where(dens[k] > 0, dens[k], 1.0), 0.0) for k in sums)
            return loss, _term_objectives(m, sums, dens)

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def accumulate(carry, mb_i):
            g_acc, l_acc = carry
            (loss, m), g = grad_fn(params, *mb_i)
            g_acc = jax.tree.map(lambda a, b: a + b.astype(a.dtype), g_acc, g)
            return (g_acc, l_acc + loss), m

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        (grads, loss), mb_metrics = jax.lax.scan(
            accumulate, (zeros, jnp.zeros((), jnp.float32)), (mbs, jnp.arange(num_microbatches))
        )
        # per-term objectives are each micro-batch's share S^obj_k(mb) / D_k: summed, exact; the
        # sampler-vs-trainer mismatch: sums and a max over micro-batches, exact
        metrics.update(finish_mismatch({k: over_microbatches(k, v) for k, v in mb_metrics.items()}))
        grad_norm = optax.global_norm(grads)
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        if skip_grad_norm is not None:
            ok = ok & (grad_norm <= skip_grad_norm)
        grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
        updates, new_opt = tx.update(grads, state.opt_state, params)
        new_params = optax.apply_updates(params, updates)
        # the result itself is checked, not only its inputs: a NaN/inf learning rate or an
        # overflow inside the optimiser makes finite gradients into non-finite parameters
        param_norm, update_norm = optax.global_norm(params), optax.global_norm(updates)
        finite_result = tree_all_finite(new_params) & tree_all_finite(new_opt) & jnp.isfinite(update_norm)
        nonfinite = ~(jnp.isfinite(loss) & jnp.isfinite(grad_norm) & finite_result)
        too_large = jnp.zeros((), bool) if skip_update_ratio is None else (update_norm > skip_update_ratio * param_norm)
        ok = ok & ~nonfinite & ~too_large
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
        new_params = keep(new_params, params)
        new_state = state.replace(
            step=state.step + 1,
            params=new_params if frozen is None else nnx.merge_state(new_params, frozen),
            opt_state=keep(new_opt, state.opt_state),
        )
        metrics.update(
            loss=sum(metrics[f"loss/{k}"] for k in dens),
            surrogate=loss,
            grad_norm=grad_norm,
            skipped=(~ok).astype(jnp.int32),
            nonfinite=nonfinite.astype(jnp.int32),
            update_too_large=too_large.astype(jnp.int32),
            param_norm=param_norm,
            update_norm=update_norm,
        )
        metrics.update({f"denominator/{k}": v for k, v in dens.items()})
        return new_state, metrics

    kw = dict(donate_argnums=(0,) if donate else ())
    if mesh is not None:
        if shardings is None:
            raise ValueError("with a mesh, pass the state shardings from create_train_state")
        data = NamedSharding(mesh, P(("data", "fsdp")))
        kw.update(in_shardings=(shardings, data), out_shardings=(shardings, NamedSharding(mesh, P())))
    return jax.jit(step, **kw)
