"""One online-RL step as public stages, each a function with a typed value between them; the
`Trainer` runs exactly these, and a notebook, a test or a benchmark can run them without one:

    rollouts = sample(sampler, state.params, records, prompts, key, sampling)     # → Rollouts
    scored = score(scorer, rollouts)                                               # → ScoredRollouts
    rows, info = assemble_rows(scored, tok, demos=..., replay=...)                 # → Rows (host)
    batch = frozen_inputs(to_device(rows, mesh), params=state.params, key=key,
                          logp_fn=logp_fn, ref_params=ref_params, mesh=mesh)       # → Batch (device)
    state, metrics = update(step_fn, state, batch, epochs=config.train.update_epochs)

The trainer's step ``s`` uses ``key = fold_in(state.key, s)`` and samples its (first) draw with
``fold_in(key, 0)`` (`draw_groups`). The pieces a step runs on are built from a config by
`optimizer`, `policy_step` and `policy_logp_fn` (with `upt_jax.train.state.create_train_state`
and `upt_jax.sampling.Sampler`), as the trainer builds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Callable

import jax
import jax.numpy as jnp

from upt_jax.models.logprobs import jitted_logprobs
from upt_jax.train import lora_state
from upt_jax.train.frozen import Batch, frozen_inputs
from upt_jax.train.rollouts import Group, Rollouts, ScoredRollouts, Scorer, draw_groups, rollouts, sample, score
from upt_jax.train.rows import Rows, assemble_rows
from upt_jax.train.state import make_optimizer
from upt_jax.train.step import make_train_step, place_batch, upge_objective

__all__ = [
    "Rollouts",
    "Group",
    "ScoredRollouts",
    "Rows",
    "Batch",
    "Scorer",
    "sample",
    "score",
    "rollouts",
    "draw_groups",
    "assemble_rows",
    "to_device",
    "frozen_inputs",
    "update",
    "optimizer",
    "policy_step",
    "policy_logp_fn",
]


def to_device(rows: Mapping, mesh=None) -> dict:
    """``rows`` (`Rows`, numpy) as device arrays: placed on ``mesh`` with the rows over
    ``('data', 'fsdp')`` (`place_batch`), or on the default device without one."""
    if mesh is not None:
        return place_batch(dict(rows), mesh)
    return {k: jnp.asarray(v) for k, v in rows.items()}


def update(
    step_fn: Callable, state, batch: Batch, *, epochs: int = 1, critic=None, critic_epochs: int | None = None
) -> tuple[object, dict]:
    """The update stage: ``epochs`` updates of the policy ``state`` by ``step_fn`` on ``batch``
    and ``critic_epochs`` (None: ``epochs``) of PPO's ``critic`` on ``batch.critic`` (its values and
    returns are fixed before the policy's first update, so the two sequences are independent).
    Returns the new state and the last update's metrics (host values), with the first update's
    sampler-vs-trainer ``mismatch/*`` (the parameters that sampled) and the critic's last as
    ``critic/*``."""
    first, critic_m = None, {}
    for _ in range(epochs):
        state, m = step_fn(state, batch.policy)
        first = m if first is None else first
    if critic is not None:
        for _ in range(epochs if critic_epochs is None else critic_epochs):
            critic_m = critic.update(batch.critic)
    m = dict(jax.device_get(m), **{k: v for k, v in jax.device_get(first).items() if k.startswith("mismatch/")})
    m.update({f"critic/{k}": v for k, v in jax.device_get(critic_m).items() if not k.startswith("denom")})
    return state, m


def optimizer(config):
    """The policy's optax optimiser from ``config.train`` (its schedule counts updates:
    ``steps × update_epochs``)."""
    t = config.train
    return make_optimizer(
        t.learning_rate,
        schedule=t.schedule,
        warmup_steps=t.warmup_steps,
        total_steps=t.steps * t.update_epochs,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        decay_steps=t.get("decay_steps", 0) * t.update_epochs,
    )


def policy_step(
    config, recipe, graphdef, tx, *, group_size: int, temperature: float, mesh=None, shardings=None, lora=None
) -> Callable:
    """The jitted update ``step_fn(state, batch) → (state, metrics)`` of ``recipe``
    (`upt_jax.upge.Recipe`) with ``config.train``'s micro-batches, chunking and skip rules; the
    policy at ``temperature``; ``lora`` (`upt_jax.train.lora_state.adapt`'s): train the adapters."""
    t = config.train
    objective = upge_objective(
        recipe,
        group_size=group_size,
        chunk_size=t.logprob_chunk,
        logits_remat=t.get("logprob_remat", "auto"),
        temperature=temperature,
        share_prompt=t.get("share_prompt", False),
    )
    return make_train_step(
        graphdef,
        tx,
        objective,
        num_microbatches=t.microbatches,
        group_size=group_size,
        skip_grad_norm=t.skip_grad_norm,
        skip_update_ratio=t.get("skip_update_ratio", 1.0),
        mesh=mesh,
        shardings=shardings,
        trainable=lora_state.trainable(lora),
        model_hook=lora_state.dropout_hook(lora),
    )


def policy_logp_fn(graphdef, *, chunk_size: int, temperature: float) -> Callable:
    """``logp_fn(params, tokens, attention_mask, columns=None) → [B, L]`` token log-probs at ``temperature``,
    jitted, forward only (chunked: no recompute, one chunk held): the reference's
    (`upt_jax.models.logprobs.jitted_logprobs`)."""
    return jitted_logprobs(graphdef, chunk_size=chunk_size, temperature=temperature)
