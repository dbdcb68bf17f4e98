"""Shared helpers: the same random Qwen2 model in transformers (PyTorch CPU) and upt_jax."""
from __future__ import annotations

import os
import tempfile

from upt_jax.models import PRESETS


def hf_qwen2(name: str, seed: int = 0):
    """A random ``transformers`` Qwen2 model with the preset's shape (fp32, eval mode)."""
    import torch
    import transformers

    p = PRESETS[name]
    cfg = transformers.Qwen2Config(
        vocab_size=p["vocab_size"], hidden_size=p["hidden_size"], intermediate_size=p["intermediate_size"],
        num_hidden_layers=p["num_layers"], num_attention_heads=p["num_heads"],
        num_key_value_heads=p["num_kv_heads"], max_position_embeddings=4096,
        tie_word_embeddings=p.get("tie_word_embeddings", False), bos_token_id=None, eos_token_id=None,
        pad_token_id=0)
    torch.manual_seed(seed)
    return transformers.Qwen2ForCausalLM(cfg).float().eval()


def same_model_in_jax(hf_model, **load_kw):
    """Save the transformers model to a temp dir and load it into upt_jax (identical weights)."""
    from upt_jax.models import load_hf_checkpoint

    with tempfile.TemporaryDirectory() as d:
        hf_model.save_pretrained(d)
        return load_hf_checkpoint(d, **load_kw)


def set_torch_threads():
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
