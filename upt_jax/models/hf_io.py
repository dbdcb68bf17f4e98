"""Hugging Face checkpoint import/export (safetensors only; nothing is unpickled).

Import reads ``config.json`` and ``model.safetensors`` or the shards named by
``model.safetensors.index.json`` and places every tensor straight onto its sharding (one
tensor in host memory at a time). Export writes ``config.json`` and safetensors shards
(with an index when more than one) that ``transformers.AutoModelForCausalLM`` loads.

Name mapping (NNX path → HF name): ``kernel`` ↔ ``weight`` transposed (NNX kernels are
``[in, out]``, torch ``[out, in]``), ``embedding`` ↔ ``weight``; everything except
``lm_head`` lives under ``model.``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Iterator

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from upt_jax.models.config import ModelConfig
from upt_jax.models.partition import DEFAULT_RULES, Rules, param_shardings, path_to_str
from upt_jax.models.transformer import Transformer, abstract_model

log = logging.getLogger(__name__)

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Buffers some exporters write that are not parameters.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class CheckpointError(ValueError):
    """A checkpoint directory is missing files, tensors, or has tensors of the wrong shape."""


def nnx_path_to_hf(path: str) -> tuple[str, bool]:
    """``"layers/0/self_attn/q_proj/kernel"`` → (``"model.layers.0.self_attn.q_proj.weight"``, transpose)."""
    parts = path.split("/")
    leaf = parts[-1]
    transpose = leaf == "kernel"
    if leaf in ("kernel", "embedding"):
        parts[-1] = "weight"
    name = ".".join(parts)
    return (name if parts[0] == "lm_head" else "model." + name), transpose


def _tensor_files(directory: str) -> dict[str, str]:
    """HF tensor name → safetensors file path."""
    index = os.path.join(directory, INDEX_FILE)
    single = os.path.join(directory, SINGLE_FILE)
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index} has no 'weight_map'")
        files = {name: os.path.join(directory, fname) for name, fname in weight_map.items()}
        for fpath in set(files.values()):
            if not os.path.exists(fpath):
                raise CheckpointError(f"{index} names {os.path.basename(fpath)}, which is missing")
        return files
    if os.path.exists(single):
        from safetensors import safe_open

        with safe_open(single, framework="numpy") as f:
            return {name: single for name in f.keys()}
    present = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    if any(p.endswith((".bin", ".pt", ".pth")) for p in present):
        raise CheckpointError(
            f"{directory} holds only pickle-based weights ({present}); upt_jax loads safetensors only "
            "(convert with transformers: model.save_pretrained(dir, safe_serialization=True))"
        )
    raise CheckpointError(f"no {SINGLE_FILE} or {INDEX_FILE} in {directory} (found {present})")


class _Reader:
    """Opens each safetensors file once; reads one tensor at a time."""

    def __init__(self, files: dict[str, str]):
        self.files = files
        self._handles: dict[str, Any] = {}

    def get(self, name: str) -> np.ndarray:
        from safetensors import safe_open

        path = self.files[name]
        if path not in self._handles:
            try:
                self._handles[path] = safe_open(path, framework="numpy").__enter__()
            except Exception as e:  # truncated or corrupted file
                raise CheckpointError(f"cannot read {path}: {e}") from e
        return self._handles[path].get_tensor(name)

    def close(self):
        for h in self._handles.values():
            h.__exit__(None, None, None)
        self._handles.clear()


def load_hf_checkpoint(
    directory: str | os.PathLike,
    *,
    param_dtype: str = "float32",
    dtype: str | None = None,
    mesh: Mesh | None = None,
    rules: Rules = DEFAULT_RULES,
    remat: str = "none",
    cfg: ModelConfig | None = None,
) -> Transformer:
    """Load a Hugging Face checkpoint directory into a (sharded) ``Transformer``.

    Args:
      directory: holds ``config.json`` and ``model.safetensors`` or an index + shards.
      param_dtype: storage dtype of the loaded parameters (``"float32"``/``"bfloat16"``).
      dtype: compute dtype (default ``param_dtype``).
      mesh: if given, each parameter is placed with the sharding the ``rules`` name.
      cfg: the architecture, when it is known from elsewhere (a shipped upt_jax model directory's
        ``model.json`` records special token ids that ``config.json`` does not); default: read
        ``config.json``.
    Raises:
      CheckpointError: missing files or tensors, or a tensor whose shape disagrees with config.json.
    """
    directory = os.fspath(directory)
    if cfg is None:
        cfg = ModelConfig.from_pretrained(directory, param_dtype=param_dtype, dtype=dtype)
    graphdef, abstract_state = nnx.split(abstract_model(cfg, remat=remat))
    shardings = param_shardings(abstract_state, mesh, rules) if mesh is not None else None
    files = _tensor_files(directory)
    reader = _Reader(files)
    used: set[str] = set()
    missing: list[str] = []

    def load(path, leaf, sharding=None):
        p = path_to_str(path)
        name, transpose = nnx_path_to_hf(p)
        if name not in files:
            missing.append(name)
            return leaf
        used.add(name)
        arr = reader.get(name)
        if transpose:
            arr = arr.T
        if arr.shape != tuple(leaf.shape):
            raise CheckpointError(
                f"{name}: checkpoint shape {arr.shape[::-1] if transpose else arr.shape} does not match "
                f"config.json (expected {tuple(leaf.shape)[::-1] if transpose else tuple(leaf.shape)})"
            )
        arr = np.ascontiguousarray(arr.astype(leaf.dtype))
        if sharding is None:
            return jax.device_put(arr)
        return jax.make_array_from_callback(arr.shape, sharding, lambda idx: arr[idx])

    try:
        if shardings is None:
            state = jax.tree_util.tree_map_with_path(load, abstract_state)
        else:
            state = jax.tree_util.tree_map_with_path(load, abstract_state, shardings)
    finally:
        reader.close()
    if missing:
        raise CheckpointError(f"{directory} is missing {len(missing)} tensors, e.g. {missing[:5]}")
    unused = [
        n
        for n in files
        if n not in used
        and not n.endswith(_IGNORED_SUFFIXES)
        and not (cfg.tie_word_embeddings and n == "lm_head.weight")
    ]
    if unused:
        log.warning("%s: %d tensors not used by the model, e.g. %s", directory, len(unused), unused[:5])
    return nnx.merge(graphdef, state)


def iter_hf_tensors(model: Transformer, dtype: str | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(hf_name, numpy array)`` for every parameter (gathered to host)."""
    state = nnx.state(model, nnx.Param)
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    for path, leaf in flat:
        name, transpose = nnx_path_to_hf(path_to_str(path))
        arr = np.asarray(jax.device_get(leaf))
        if transpose:
            arr = arr.T
        if dtype is not None:
            from upt_jax.models.config import as_dtype

            arr = arr.astype(as_dtype(dtype))
        yield name, np.ascontiguousarray(arr)


def save_hf_checkpoint(
    model: Transformer,
    directory: str | os.PathLike,
    *,
    max_shard_bytes: int = 4 << 30,
    dtype: str | None = None,
    extra_config: dict | None = None,
) -> str:
    """Export to a directory that ``transformers.AutoModelForCausalLM.from_pretrained`` loads.

    Writes ``config.json`` and ``model.safetensors``, or ``model-0000i-of-0000n.safetensors``
    shards of at most ``max_shard_bytes`` plus ``model.safetensors.index.json``.
    Returns the directory.
    """
    from safetensors.numpy import save_file

    if jax.tree.leaves(nnx.state(model, nnx.LoRAParam)):
        raise ValueError(
            "the model has LoRA adapters: merge them first (upt_jax.models.lora.merge_lora) or "
            "write them in the PEFT layout (upt_jax.models.peft_io.save_peft_adapter)"
        )
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    cfg: ModelConfig = model.cfg
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, arr in iter_hf_tensors(model, dtype):
        if size and size + arr.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = arr
        size += arr.nbytes
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], os.path.join(directory, SINGLE_FILE), metadata=meta)
    else:
        weight_map, total = {}, 0
        for i, shard in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, os.path.join(directory, fname), metadata=meta)
            for name, arr in shard.items():
                weight_map[name] = fname
                total += arr.nbytes
        with open(os.path.join(directory, INDEX_FILE), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    hf = cfg.to_hf_dict()
    if dtype is not None:
        hf["torch_dtype"] = dtype
    hf.update(extra_config or {})
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf, f, indent=2)
    return directory
