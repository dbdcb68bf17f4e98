"""Flax NNX decoder-only transformers (Llama 3, Qwen2/2.5, Qwen3), KV cache, chunked log-probs,
Hugging Face safetensors import/export, partition rules, LoRA/QLoRA adapters and their PEFT export."""

from upt_jax.models.config import ModelConfig, preset, PRESETS
from upt_jax.models.transformer import (
    KVCache,
    Transformer,
    abstract_model,
    init_model,
    positions_from_mask,
    positions_from_segments,
)
from upt_jax.models.logprobs import naive_token_logprobs, sequence_logprobs, token_logprobs
from upt_jax.models.hf_io import CheckpointError, load_hf_checkpoint, save_hf_checkpoint
from upt_jax.models.reward import RewardModel, bradley_terry_loss, reward_model_from
from upt_jax.models.value import ValueModel, explained_variance, value_loss, value_model_from
from upt_jax.models.lora import LoraConfig, apply_lora, merge_lora, set_adapters
from upt_jax.models.peft_io import save_peft_adapter
from upt_jax.models.partition import (
    DEFAULT_RULES,
    MESH_AXES,
    batch_sharding,
    make_mesh,
    param_shardings,
    param_specs,
    shard_model,
)

__all__ = [
    "ModelConfig",
    "preset",
    "PRESETS",
    "KVCache",
    "Transformer",
    "abstract_model",
    "init_model",
    "positions_from_mask",
    "positions_from_segments",
    "naive_token_logprobs",
    "sequence_logprobs",
    "token_logprobs",
    "CheckpointError",
    "load_hf_checkpoint",
    "save_hf_checkpoint",
    "DEFAULT_RULES",
    "MESH_AXES",
    "batch_sharding",
    "make_mesh",
    "ValueModel",
    "explained_variance",
    "value_loss",
    "value_model_from",
    "RewardModel",
    "bradley_terry_loss",
    "reward_model_from",
    "param_shardings",
    "param_specs",
    "shard_model",
    "LoraConfig",
    "apply_lora",
    "merge_lora",
    "set_adapters",
    "save_peft_adapter",
]
