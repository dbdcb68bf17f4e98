"""Training with LoRA adapters: what the trainer does differently when ``config.model.lora.rank > 0``.

- The model gets adapters (`upt_jax.models.lora.apply_lora`, ``A`` seeded by ``config.seed``).
- ``TrainState.params`` still holds every variable (base + adapters, so the sampler and in-training
  evaluation merge it with the graphdef as always), but only the ``nnx.LoRAParam`` s are trained:
  the optimiser state covers them alone and the update step differentiates them alone
  (``create_train_state`` / ``make_train_step`` with ``trainable=nnx.LoRAParam``).
- The frozen reference of KL / DPO is the same params with the adapters switched off
  (`reference_logp_fn`): no copy of the model.
- Checkpoints hold the adapters, the optimiser state, the step and the key (`saved_state`); the
  base comes back from its source (a preset's seed-0 init, the HF directory, the parent run) when
  the run resumes (`with_base`) or is read (`adapted_model_from_run`, with `merged_model_from_run`,
  `run_lora` and `lora_config` defined in `upt_jax.train.run_model`, the one way to get a run's model,
  and re-exported here).
"""

from __future__ import annotations

import logging

import jax
from flax import nnx

from upt_jax.models.lora import LoraConfig, apply_lora, merge_lora, set_adapters, set_dropout_key

# reading a LoRA run back (its base from the recorded source + its adapters) is part of the one way to
# get a run's model, `upt_jax.train.run_model`; re-exported here with the run's LoraConfig
from upt_jax.train.run_model import adapted_model_from_run, lora_config, merged_model_from_run, run_lora

__all__ = [
    "TRAINABLE",
    "lora_config",
    "adapt",
    "trainable",
    "dropout_hook",
    "reference_logp_fn",
    "saved_state",
    "with_base",
    "adapter_params_bound",
    "run_lora",
    "adapted_model_from_run",
    "merged_model_from_run",
    "merge_lora",
]

log = logging.getLogger(__name__)

TRAINABLE = nnx.LoRAParam


def adapt(model, config):
    """``(model with adapters, LoraConfig)``, or ``(model, None)`` without ``model.lora``."""
    cfg = lora_config(config)
    if cfg is None:
        return model, None
    return apply_lora(model, cfg, key=jax.random.key(int(config.seed))), cfg


def trainable(cfg: LoraConfig | None):
    """The filter of the trained variables: ``nnx.LoRAParam`` with adapters, else ``None`` (all)."""
    return None if cfg is None else TRAINABLE


def dropout_hook(cfg: LoraConfig | None):
    """The update step's ``model_hook``: adapter dropout keys, when there is dropout."""
    return set_dropout_key if cfg is not None and cfg.dropout > 0 else None


def reference_logp_fn(model, *, chunk_size: int, temperature: float):
    """``jit((params, tokens, attn, columns=None) -> log-probs [B, T])`` of ``model``'s params with
    every adapter switched off: the base model, read from the train state's own params (no copy)."""
    from upt_jax.models.logprobs import jitted_logprobs

    graphdef = nnx.graphdef(set_adapters(nnx.merge(*nnx.split(model)), False))
    return jitted_logprobs(graphdef, chunk_size=chunk_size, temperature=temperature)


def saved_state(state, cfg: LoraConfig | None):
    """What a checkpoint holds of ``state`` (a ``TrainState`` of arrays, abstract arrays or
    shardings, or ``None``): everything, or with adapters everything but the frozen base."""
    if cfg is None or state is None:
        return state
    return state.replace(params=nnx.split_state(state.params, TRAINABLE, ...)[0])


def with_base(restored, state, cfg: LoraConfig | None):
    """A restored ``saved_state`` completed with the frozen base of ``state`` (the run's own)."""
    if cfg is None:
        return restored
    frozen = nnx.split_state(state.params, TRAINABLE, ...)[1]
    return restored.replace(params=nnx.merge_state(restored.params, frozen))


def adapter_params_bound(model_cfg, rank: int) -> int:
    """At most how many adapter parameters rank ``r`` adds (every projection adapted):
    ``r · Σ (D_in + D_out)`` over q, k, v, o, gate, up and down of every layer."""
    d, f, q, kv = (
        model_cfg.hidden_size,
        model_cfg.intermediate_size,
        model_cfg.num_heads * model_cfg.head_dim,
        model_cfg.num_kv_heads * model_cfg.head_dim,
    )
    per_layer = (d + q) * 2 + (d + kv) * 2 + (d + f) * 3
    return rank * per_layer * model_cfg.num_layers
