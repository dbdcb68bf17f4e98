"""LoRA adapters in the PEFT layout: ``adapter_config.json`` + ``adapter_model.safetensors``.

``peft.PeftModel.from_pretrained(base, directory)`` loads them onto the transformers model of the
base (its Hugging Face export, `upt_jax.models.hf_io.save_hf_checkpoint`). Tensor names and
shapes, for a layer with kernel ``W [D_in, D_out]`` and factors ``A [D_in, r]``, ``B [r, D_out]``::

    base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight   Aᵀ [r, D_in]
    base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight   Bᵀ [D_out, r]

with ``scaling = lora_alpha / r`` (no rsLoRA, no DoRA, no bias). ``target_modules`` lists the adapted
modules by their full names (``model.layers.0.self_attn.q_proj``), which PEFT matches exactly, so
any ``targets`` regex exports faithfully.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from upt_jax.models.hf_io import nnx_path_to_hf
from upt_jax.models.lora import LoraConfig, lora_layers

__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "peft_tensors", "peft_adapter_config", "save_peft_adapter"]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."


def _module_name(path: str) -> str:
    """``"layers/0/self_attn/q_proj"`` → ``"model.layers.0.self_attn.q_proj"`` (the HF module)."""
    return nnx_path_to_hf(path + "/kernel")[0][: -len(".weight")]


def peft_tensors(model, dtype: str | None = None) -> dict[str, np.ndarray]:
    """``{PEFT tensor name: array}`` of every adapter of ``model`` (gathered to host)."""
    from upt_jax.models.config import as_dtype

    out = {}
    for path, layer in lora_layers(model):
        name = _PREFIX + _module_name(path)
        for kind, factor in (("lora_A", layer.lora_a), ("lora_B", layer.lora_b)):
            arr = np.asarray(jax.device_get(factor[...])).T
            out[f"{name}.{kind}.weight"] = np.ascontiguousarray(arr.astype(as_dtype(dtype)) if dtype else arr)
    return out


def peft_adapter_config(model, cfg: LoraConfig, base_model_name_or_path: str | None) -> dict:
    """The ``adapter_config.json`` of ``model``'s adapters (trained with ``cfg``)."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA adapters to export")
    if cfg.rank != layers[0][1].lora_a.shape[1]:
        raise ValueError(f"LoraConfig rank {cfg.rank} is not the adapters' rank {layers[0][1].lora_a.shape[1]}")
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": cfg.rank,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "target_modules": [_module_name(p) for p, _ in layers],
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": None,
    }


def save_peft_adapter(
    model,
    directory: str | os.PathLike,
    cfg: LoraConfig,
    *,
    base_model_name_or_path: str | None = None,
    dtype: str | None = None,
) -> str:
    """Write ``model``'s adapters to ``directory`` in the PEFT layout; returns the directory.

    ``base_model_name_or_path``: recorded in ``adapter_config.json`` (the HF directory or hub name
    the adapters load onto). ``dtype``: the stored dtype (default: the adapters' float32).
    """
    from safetensors.numpy import save_file

    directory = os.fspath(directory)
    config = peft_adapter_config(model, cfg, base_model_name_or_path)
    os.makedirs(directory, exist_ok=True)
    save_file(peft_tensors(model, dtype), os.path.join(directory, ADAPTER_WEIGHTS), metadata={"format": "pt"})
    with open(os.path.join(directory, ADAPTER_CONFIG), "w") as f:
        json.dump(config, f, indent=2)
    return directory
