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
  the run resumes (`with_base`) or is read (`adapted_model_from_run`).
"""
from __future__ import annotations

import logging

import jax
from flax import nnx

from upt_jax.models.lora import LoraConfig, apply_lora, merge_lora, set_adapters, set_dropout_key

__all__ = ["TRAINABLE", "lora_config", "adapt", "trainable", "dropout_hook", "reference_logp_fn", "saved_state",
           "with_base", "adapter_params_bound", "run_lora", "adapted_model_from_run", "merged_model_from_run",
           "merge_lora"]

log = logging.getLogger(__name__)

TRAINABLE = nnx.LoRAParam


def lora_config(config) -> LoraConfig | None:
    """The run's ``LoraConfig`` (``config.model.lora``), or ``None`` when rank is 0 or absent."""
    lc = config.model.get("lora") if hasattr(config.model, "get") else None
    if not lc:
        return None
    cfg = LoraConfig.from_dict(lc)
    return cfg if cfg.enabled else None


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
    """``jit((params, tokens, attn) -> log-probs [B, T])`` of ``model``'s params with every adapter
    switched off: the base model, read from the train state's own params (no copy)."""
    from upt_jax.models.logprobs import sequence_logprobs

    graphdef = nnx.graphdef(set_adapters(nnx.merge(*nnx.split(model)), False))
    return jax.jit(lambda params, tokens, attn: sequence_logprobs(
        nnx.merge(graphdef, params), tokens, attn, chunk_size=chunk_size, temperature=temperature,
        remat="always"))


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
    d, f, q, kv = (model_cfg.hidden_size, model_cfg.intermediate_size,
                   model_cfg.num_heads * model_cfg.head_dim, model_cfg.num_kv_heads * model_cfg.head_dim)
    per_layer = (d + q) * 2 + (d + kv) * 2 + (d + f) * 3
    return rank * per_layer * model_cfg.num_layers


# ----------------------------------------------------------------------------- run directories
def run_lora(record: dict | None) -> LoraConfig | None:
    """The ``LoraConfig`` a run's ``model.json`` records, or ``None`` (no adapters)."""
    d = (record or {}).get("lora")
    return LoraConfig.from_dict(d) if d else None


def _base_model(source: dict, cfg, *, key: str, remat: str):
    """The frozen base a LoRA run trained on, rebuilt from its recorded ``source``."""
    from upt_jax.models import init_model, load_hf_checkpoint
    from upt_jax.train.run_model import model_from_run

    init = (source or {}).get("init")
    if init == "preset":  # the trainer's build_model: seed-0 init of the recorded config
        return init_model(cfg, 0, remat=remat)
    if init == "hf":
        return load_hf_checkpoint(source["hf_dir"], cfg=cfg, remat=remat)
    if init == "checkpoint":
        model, _ = model_from_run(source["checkpoint"], key=key, param_dtype=cfg.param_dtype, dtype=cfg.dtype,
                                  remat=remat)
        return model
    raise ValueError(f"{key}: the LoRA run records no usable source for its base model ({source!r})")


def adapted_model_from_run(path, *, key: str, step: int | None = None, remat: str = "none"):
    """``(model with adapters, step, LoraConfig)`` of the LoRA run directory ``path``: the base
    from the recorded source, the adapters from checkpoint ``step`` (default: the newest usable)."""
    from upt_jax.models import ModelConfig
    from upt_jax.train.checkpoint import CheckpointError, restore_params
    from upt_jax.train.run_model import checkpoints_dir, read_record, run_root

    record = read_record(run_root(path))
    cfg = run_lora(record)
    if cfg is None:
        raise ValueError(f"{key}={str(path)!r} is not a LoRA run (its model.json records no adapters)")
    base = _base_model(record["source"], ModelConfig.from_dict(record["model"]), key=key, remat=remat)
    graphdef, adapters, rest = nnx.split(apply_lora(base, cfg), TRAINABLE, ...)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), adapters)
    try:
        adapters, step = restore_params(checkpoints_dir(path), abstract, step=step, return_step=True)
    except CheckpointError as e:
        raise CheckpointError(f"{key}={str(path)!r}: cannot restore the LoRA adapters (r={cfg.rank}, "
                              f"targets {cfg.targets!r}): {e}") from e
    return nnx.merge(graphdef, adapters, rest), step, cfg


def merged_model_from_run(path, *, key: str, step: int | None = None, remat: str = "none", cfg=None,
                          mesh=None):
    """``(model, step)``: a LoRA run's model with its adapters merged into the base weights
    (`merge_lora`), in ``cfg``'s dtypes when given (another stage may train in another precision)."""
    from upt_jax.models.partition import shard_model
    from upt_jax.models.transformer import abstract_model

    model, step, _ = adapted_model_from_run(path, key=key, step=step, remat=remat)
    model = merge_lora(model)
    if cfg is not None and (cfg.param_dtype, cfg.dtype) != (model.cfg.param_dtype, model.cfg.dtype):
        target = abstract_model(cfg, remat=remat)
        nnx.update(target, jax.tree.map(lambda x, t: x.astype(t.dtype), nnx.state(model), nnx.state(target)))
        model = target
    if mesh is not None:
        shard_model(model, mesh)
    return model, step
