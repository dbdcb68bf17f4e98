"""Model configuration, read from a Hugging Face ``config.json``.

One dataclass covers the decoder-only families upt_jax supports:

| family        | ``model_type`` | differences from Llama                                   |
|---------------|----------------|----------------------------------------------------------|
| Llama 3.x     | ``llama``      | ``rope_scaling`` of type ``llama3``; optional all-proj bias |
| Qwen2 / 2.5   | ``qwen2``      | bias on q/k/v (not o); tied or untied embeddings         |
| Qwen3         | ``qwen3``      | RMSNorm on q and k per head (``qk_norm``)                |

Both the transformers-4 layout (``rope_theta`` + ``rope_scaling``) and the transformers-5
layout (``rope_parameters``) are understood.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import jax.numpy as jnp

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")

_DTYPES = {
    "float32": jnp.float32,
    "fp32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "bf16": jnp.bfloat16,
    "float16": jnp.float16,
    "fp16": jnp.float16,
}


def as_dtype(name_or_dtype: Any) -> jnp.dtype:
    """``"bf16"``/``"bfloat16"``/``jnp.bfloat16`` → ``jnp.dtype``."""
    if isinstance(name_or_dtype, str):
        if name_or_dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {name_or_dtype!r}; expected one of {sorted(_DTYPES)}")
        return jnp.dtype(_DTYPES[name_or_dtype])
    return jnp.dtype(name_or_dtype)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a decoder-only transformer.

    ``param_dtype`` is the storage dtype of the weights, ``dtype`` the compute dtype of
    matmuls and activations (RMSNorm statistics, softmax and log-probs are always fp32).
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: tuple[tuple[str, Any], ...] | None = None  # frozen dict of the HF rope params
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    model_type: str = "llama"
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None
    param_dtype: str = "float32"
    dtype: str = "float32"
    # Extra keys of the source config.json, kept so that export round-trips them.
    hf_extra: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"model_type {self.model_type!r} is not supported; expected one of {SUPPORTED_MODEL_TYPES}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")
        rope_type = self.rope_scaling_dict.get("rope_type", "default")
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(f"rope type {rope_type!r} is not supported; expected one of {SUPPORTED_ROPE_TYPES}")
        as_dtype(self.param_dtype), as_dtype(self.dtype)

    # ---------------------------------------------------------------- derived
    @property
    def rope_scaling_dict(self) -> dict[str, Any]:
        return dict(self.rope_scaling or ())

    @property
    def jnp_param_dtype(self) -> jnp.dtype:
        return as_dtype(self.param_dtype)

    @property
    def jnp_dtype(self) -> jnp.dtype:
        return as_dtype(self.dtype)

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)

    def num_params(self) -> int:
        """Number of parameters (embedding counted once when tied)."""
        d, f, hd = self.hidden_size, self.intermediate_size, self.head_dim
        q, kv = self.num_heads * hd, self.num_kv_heads * hd
        attn = d * q + 2 * d * kv + q * d
        if self.qkv_bias:
            attn += q + 2 * kv
        if self.o_bias:
            attn += d
        if self.qk_norm:
            attn += 2 * hd
        mlp = 3 * d * f + (2 * f + d if self.mlp_bias else 0)
        per_layer = attn + mlp + 2 * d
        emb = self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * per_layer + emb + d

    # ---------------------------------------------------------------- HF I/O
    @classmethod
    def from_hf_dict(
        cls, cfg: Mapping[str, Any], *, param_dtype: str = "float32", dtype: str | None = None
    ) -> "ModelConfig":
        """Build from the dict of a Hugging Face ``config.json``."""
        cfg = dict(cfg)
        model_type = cfg.get("model_type", "llama")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"config.json has model_type {model_type!r}; upt_jax supports {SUPPORTED_MODEL_TYPES}")
        if cfg.get("hidden_act", "silu") != "silu":
            raise ValueError(f"hidden_act {cfg.get('hidden_act')!r} is not supported (only silu)")
        if cfg.get("use_sliding_window", False):
            raise ValueError("sliding-window attention (use_sliding_window=true) is not supported")
        rope = cfg.get("rope_parameters") or {}
        rope_theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
        scaling = dict(cfg.get("rope_scaling") or {})
        scaling.update({k: v for k, v in rope.items() if k != "rope_theta"})
        if "type" in scaling and "rope_type" not in scaling:
            scaling["rope_type"] = scaling.pop("type")
        scaling.pop("type", None)
        if scaling.get("rope_type", "default") == "default":
            scaling = {}
        num_heads = cfg["num_attention_heads"]
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // num_heads
        attention_bias = bool(cfg.get("attention_bias", False))
        known = {
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "rms_norm_eps",
            "rope_theta",
            "rope_scaling",
            "rope_parameters",
            "max_position_embeddings",
            "tie_word_embeddings",
            "attention_bias",
            "mlp_bias",
            "model_type",
            "bos_token_id",
            "eos_token_id",
            "pad_token_id",
            "torch_dtype",
            "dtype",
            "transformers_version",
            "architectures",
        }
        extra = tuple(sorted((k, _freeze(v)) for k, v in cfg.items() if k not in known))
        eos = cfg.get("eos_token_id")
        if isinstance(eos, list):
            eos = tuple(eos)
        return cls(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=num_heads,
            num_kv_heads=cfg.get("num_key_value_heads") or num_heads,
            head_dim=head_dim,
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope_theta),
            rope_scaling=tuple(sorted(scaling.items())) or None,
            max_position_embeddings=cfg.get("max_position_embeddings", 4096),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=True if model_type == "qwen2" else attention_bias,
            o_bias=attention_bias if model_type == "llama" else False,
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            qk_norm=model_type == "qwen3",
            model_type=model_type,
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_id=eos,
            pad_token_id=cfg.get("pad_token_id"),
            param_dtype=param_dtype,
            dtype=dtype or param_dtype,
            hf_extra=extra,
        )

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kw) -> "ModelConfig":
        """Read ``<path>/config.json`` (a directory) or ``path`` itself (a file)."""
        path = os.fspath(path)
        file = os.path.join(path, "config.json") if os.path.isdir(path) else path
        if not os.path.exists(file):
            raise FileNotFoundError(f"no config.json at {file}")
        with open(file) as f:
            return cls.from_hf_dict(json.load(f), **kw)

    def to_hf_dict(self) -> dict[str, Any]:
        """The ``config.json`` dict that ``transformers`` loads back into the same model."""
        arch = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
        out: dict[str, Any] = {k: _thaw(v) for k, v in self.hf_extra}
        rope = {"rope_type": "default", **self.rope_scaling_dict, "rope_theta": self.rope_theta}
        out.update(
            architectures=[arch[self.model_type]],
            model_type=self.model_type,
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            hidden_act="silu",
            rms_norm_eps=self.rms_norm_eps,
            max_position_embeddings=self.max_position_embeddings,
            tie_word_embeddings=self.tie_word_embeddings,
            # Both layouts, so that transformers 4 and 5 read the same RoPE.
            rope_theta=self.rope_theta,
            rope_scaling=None
            if rope["rope_type"] == "default"
            else {k: v for k, v in rope.items() if k != "rope_theta"},
            rope_parameters=rope,
            bos_token_id=self.bos_token_id,
            eos_token_id=list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id,
            pad_token_id=self.pad_token_id,
            torch_dtype=self.param_dtype,
        )
        if self.model_type == "llama":
            out.update(attention_bias=self.qkv_bias, mlp_bias=self.mlp_bias)
        elif self.model_type == "qwen3":
            out.update(attention_bias=self.qkv_bias)
        return out

    # ---------------------------------------------------------------- exact record
    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON-ready values (``rope_scaling`` and ``hf_extra`` as dicts, a tuple
        ``eos_token_id`` as a list): ``from_dict`` gives back an equal config. Unlike
        ``to_hf_dict`` it keeps what ``config.json`` cannot say (e.g. a Qwen2 without q/k/v bias)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["rope_scaling"] = self.rope_scaling_dict or None
        out["hf_extra"] = {k: _thaw(v) for k, v in self.hf_extra}
        if isinstance(self.eos_token_id, tuple):
            out["eos_token_id"] = list(self.eos_token_id)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], **replace) -> "ModelConfig":
        """The config ``to_dict`` wrote; ``replace`` sets fields (e.g. ``param_dtype``). Unknown
        keys are an error (a record from a newer upt_jax)."""
        d = dict(d, **replace)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"model record has unknown fields {unknown}")
        d["rope_scaling"] = tuple(sorted((d.get("rope_scaling") or {}).items())) or None
        d["hf_extra"] = tuple(sorted((k, _freeze(v)) for k, v in (d.get("hf_extra") or {}).items()))
        if isinstance(d.get("eos_token_id"), list):
            d["eos_token_id"] = tuple(d["eos_token_id"])
        return cls(**d)


def _freeze(v):
    if isinstance(v, dict):
        return ("__dict__", tuple(sorted((k, _freeze(x)) for k, x in v.items())))
    if isinstance(v, list):
        return ("__list__", tuple(_freeze(x) for x in v))
    return v


def _thaw(v):
    if isinstance(v, tuple) and len(v) == 2 and v[0] == "__dict__":
        return {k: _thaw(x) for k, x in v[1]}
    if isinstance(v, tuple) and len(v) == 2 and v[0] == "__list__":
        return [_thaw(x) for x in v[1]]
    return v


# The configs the benchmarks and tests name (Qwen2-shaped, random weights).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        vocab_size=4096, hidden_size=256, intermediate_size=1024, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=64
    ),
    "small": dict(
        vocab_size=32000,
        hidden_size=512,
        intermediate_size=2048,
        num_layers=8,
        num_heads=8,
        num_kv_heads=2,
        head_dim=64,
    ),
    "qwen2-0.5b": dict(
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_layers=24,
        num_heads=14,
        num_kv_heads=2,
        head_dim=64,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
    ),
}


def preset(name: str, **overrides) -> ModelConfig:
    """A named Qwen2-shaped config (``tiny``, ``small``, ``qwen2-0.5b``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    kw = dict(model_type="qwen2", qkv_bias=True, **PRESETS[name])
    kw.update(overrides)
    return ModelConfig(**kw)
