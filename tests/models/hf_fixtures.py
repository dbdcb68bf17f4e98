"""Tiny random Hugging Face checkpoints built with transformers + PyTorch CPU."""

from __future__ import annotations

import numpy as np

TINY = dict(
    vocab_size=96,
    hidden_size=64,
    intermediate_size=112,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
)

FAMILIES = {
    "llama3": (
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
            tie_word_embeddings=False,
        ),
    ),
    "qwen2_tied": ("Qwen2Config", "Qwen2ForCausalLM", dict(rope_theta=10000.0, tie_word_embeddings=True)),
    "qwen2_untied": ("Qwen2Config", "Qwen2ForCausalLM", dict(rope_theta=1000000.0, tie_word_embeddings=False)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(rope_theta=1000000.0, head_dim=32, tie_word_embeddings=True)),
}


def build_hf_model(family: str, seed: int = 0):
    """A random transformers model of ``family`` with non-trivial norms and biases."""
    import torch
    import transformers

    cfg_cls, model_cls, extra = FAMILIES[family]
    kw = dict(TINY, **extra)
    if "rope_scaling" in kw:  # transformers 5 keeps theta inside rope_parameters
        kw["rope_scaling"] = dict(kw["rope_scaling"], rope_theta=kw["rope_theta"])
    cfg = getattr(transformers, cfg_cls)(**kw)
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(cfg).float().eval()
    with torch.no_grad():  # perturb norms and biases so that a wrong mapping shows
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.normal_(0.0, 0.1)
    return model


def left_padded_batch(vocab: int, seed: int = 0, lengths=(11, 7, 3, 11), pad_id: int = 0):
    """``tokens [B, T]`` and ``mask [B, T]`` with rows left-padded to the longest length."""
    rng = np.random.RandomState(seed)
    t = max(lengths)
    tokens = np.full((len(lengths), t), pad_id, np.int64)
    mask = np.zeros((len(lengths), t), np.int64)
    for i, n in enumerate(lengths):
        tokens[i, t - n :] = rng.randint(1, vocab, n)
        mask[i, t - n :] = 1
    return tokens, mask


def hf_logits(model, tokens, mask) -> np.ndarray:
    import torch

    with torch.no_grad():
        tt, mm = torch.tensor(tokens), torch.tensor(mask)
        pos = (mm.cumsum(-1) - 1).clamp(min=0)
        return model(input_ids=tt, attention_mask=mm, position_ids=pos).logits.float().numpy()
