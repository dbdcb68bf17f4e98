"""LoRA and QLoRA adapters on the NNX transformer's linear layers.

A targeted ``nnx.Linear`` with kernel ``W [D_in, D_out]`` becomes a `LoRALinear` (the same module,
its class switched, so every base parameter keeps its path) computing

    y = x W + b + (α / r) · dropout(x) A B,      A [D_in, r] ~ U(±1/√D_in),  B [r, D_out] = 0

with ``A``, ``B`` stored as ``nnx.LoRAParam`` (float32) at ``<module>/lora_a`` and ``lora_b``. B
starts at zero, so a freshly adapted model computes the base model's logits bitwise; with the
adapters switched off (`set_adapters`) the layer runs the base path alone. The PEFT layout stores
the same factors transposed: ``lora_A.weight = Aᵀ [r, D_in]``, ``lora_B.weight = Bᵀ [D_out, r]``,
with ``scaling = lora_alpha / r``.

QLoRA (``quantize`` = ``int8``, ``int4`` or ``nf4``): the frozen kernel is replaced by qwix's
quantised form (``qwix.quantize``: ``QArray`` of ``qvalue [D_in, D_out]`` and per-block scales
``[D_in / block, D_out]``, blocks of ``block_size`` input rows, one scale per output column), held in
a `QuantizedKernel` at ``<module>/kernel``, and dequantised (``qwix.dequantize``) in the forward
pass; the adapters stay float32.

Why not qwix's ``LoraProvider``: it intercepts one method per model by patching ``jax.lax`` /
``jnp.einsum`` process-wide. Intercepting ``__call__`` leaves ``hidden_states`` (what the
log-probs and the sampler call) without adapters, silently; intercepting ``hidden_states``
fails on XLA CPU, where the projections' matmul runs inside a ``custom_vjp`` (``transformer.dense_cpu``)
and the provider mutates the module from inside that trace (``TraceContextError``). Reproduction:
``docs/lora.md``. Quantisation uses qwix's own numerics.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from upt_jax.models.transformer import Transformer, dense

log = logging.getLogger(__name__)

QUANT_TYPES = ("none", "int8", "int4", "nf4")
DEFAULT_TARGETS = r"(q|k|v|o|gate|up|down)_proj$"


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Adapter hyper-parameters.

    Attributes:
      rank: ``r`` (0: no adapters).
      alpha: ``α``; the update is scaled by ``α / r``.
      dropout: dropout rate on the adapter's input (training only; needs a key, `set_dropout_key`).
      targets: regex ``re.search``-ed on each linear layer's module path (``layers/3/mlp/up_proj``).
      quantize: the frozen base kernels' storage (QLoRA): ``none``, ``int8``, ``int4`` or ``nf4``.
      block_size: input rows per quantisation scale (falls back to one scale per column when it
        does not divide ``D_in``).
    """

    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    targets: str = DEFAULT_TARGETS
    quantize: str = "none"
    block_size: int = 64

    def __post_init__(self):
        if self.rank < 0:
            raise ValueError(f"LoRA rank must be ≥ 0, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if self.quantize not in QUANT_TYPES:
            raise ValueError(f"LoRA quantize must be one of {QUANT_TYPES}, got {self.quantize!r}")
        if self.block_size < 1:
            raise ValueError(f"LoRA block_size must be ≥ 1, got {self.block_size}")
        re.compile(self.targets)

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "LoraConfig":
        """From a dict or ``ml_collections.ConfigDict`` (unknown keys are an error)."""
        d = dict(d.to_dict() if hasattr(d, "to_dict") else d or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown LoRA config keys {unknown}; expected some of {sorted(names)}")
        return cls(**d)


class QuantizedKernel(nnx.Variable):
    """A frozen kernel stored quantised: its value is a ``qwix.QArray`` (not trainable)."""


class LoRALinear(nnx.Linear):
    """An ``nnx.Linear`` with a low-rank update (see the module docstring). Never constructed
    directly: `apply_lora` switches the class of existing layers and adds ``lora_a``, ``lora_b``,
    ``lora_scale``, ``lora_dropout``, ``lora_enabled`` (static) and, for QLoRA, ``lora_quant``."""

    def base_kernel(self) -> jax.Array:
        """``W [D_in, D_out]`` (dequantised for QLoRA), in the stored dtype."""
        import qwix

        if isinstance(self.kernel, QuantizedKernel):
            return qwix.dequantize(self.kernel.get_value())
        return self.kernel[...]

    def _base(self, x: jax.Array) -> jax.Array:
        if not isinstance(self.kernel, QuantizedKernel):
            return nnx.Linear.__call__(self, x)
        x = x.astype(self.dtype) if self.dtype is not None else x
        w = self.base_kernel().astype(x.dtype)
        y = self.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        return y

    def __call__(self, x: jax.Array, out_sharding=None) -> jax.Array:
        """``x [..., D_in] → [..., D_out]``."""
        y = self._base(x)
        if not self.lora_enabled:
            return y
        h = x
        key = getattr(self, "lora_dropout_key", None)
        if self.lora_dropout > 0 and key is not None:
            keep = jax.random.bernoulli(key, 1.0 - self.lora_dropout, h.shape)
            h = jnp.where(keep, h / (1.0 - self.lora_dropout), 0).astype(h.dtype)
        a = self.lora_a[...].astype(h.dtype)
        delta = dense(dense(h, a).astype(h.dtype), self.lora_b[...].astype(h.dtype))
        return y + (delta * self.lora_scale).astype(y.dtype)


# ----------------------------------------------------------------------------- applying
def _linear_paths(model) -> list[tuple[str, nnx.Linear]]:
    return [("/".join(map(str, p)), m) for p, m in nnx.iter_modules(model) if isinstance(m, nnx.Linear) and p]


def _quantize(kernel: jax.Array, qtype: str, block: int):
    """``qwix.quantize`` of ``kernel [D_in, D_out]``: one scale per column and per ``block`` rows."""
    import qwix

    d_in = kernel.shape[0]
    tiled = {0: block} if block < d_in and d_in % block == 0 else {}
    if block < d_in and not tiled:
        log.info("QLoRA: block %d does not divide D_in=%d; one scale per column", block, d_in)
    t = {"int8": jnp.int8, "int4": jnp.int4}.get(qtype, qtype)
    return jax.jit(lambda w: qwix.quantize(w, t, channelwise_axes=(1,), tiled_axes=tiled))(kernel)


def apply_lora(model: Transformer, cfg: LoraConfig, *, key: jax.Array | int = 0) -> Transformer:
    """A copy of ``model`` whose linear layers matching ``cfg.targets`` carry adapters.

    The copy shares the base weights' arrays with ``model`` (nothing is copied; ``model`` itself
    is left as it was, unless QLoRA, whose quantised kernels are new arrays). ``key`` seeds the
    ``A`` factors (layer ``i`` in path order uses ``fold_in(key, i)``).

    Raises ``ValueError`` when ``cfg.rank`` is 0, when the model already has adapters, or when no
    linear layer matches ``cfg.targets``.
    """
    if not cfg.enabled:
        raise ValueError("apply_lora needs rank > 0 (rank 0 means no adapters)")
    if has_adapters(model):
        raise ValueError("the model already has LoRA adapters")
    key = key if isinstance(key, jax.Array) else jax.random.key(key)
    model = nnx.merge(*nnx.split(model))  # new modules, same arrays
    pattern = re.compile(cfg.targets)
    hits = [(p, m) for p, m in _linear_paths(model) if pattern.search(p)]
    if not hits:
        raise ValueError(
            f"LoRA targets {cfg.targets!r} match no linear layer; layers are e.g. "
            f"{[p for p, _ in _linear_paths(model)][:8]}"
        )
    for i, (_, lin) in enumerate(hits):
        d_in, d_out = lin.in_features, lin.out_features
        bound = 1.0 / math.sqrt(d_in)  # PEFT's kaiming_uniform(a=√5) on A
        lin.__class__ = LoRALinear
        lin.lora_a = nnx.LoRAParam(
            jax.random.uniform(jax.random.fold_in(key, i), (d_in, cfg.rank), jnp.float32, -bound, bound)
        )
        lin.lora_b = nnx.LoRAParam(jnp.zeros((cfg.rank, d_out), jnp.float32))
        lin.lora_scale = float(cfg.scale)
        lin.lora_dropout = float(cfg.dropout)
        lin.lora_enabled = True
        if cfg.quantize != "none":
            lin.kernel = QuantizedKernel(_quantize(lin.kernel[...], cfg.quantize, cfg.block_size))
    log.info(
        "LoRA r=%d α=%g on %d layers (%s)%s",
        cfg.rank,
        cfg.alpha,
        len(hits),
        cfg.targets,
        "" if cfg.quantize == "none" else f", base quantised to {cfg.quantize}",
    )
    return model


def lora_layers(model) -> list[tuple[str, LoRALinear]]:
    """``(module path, layer)`` of every adapted layer, in path order."""
    return [(p, m) for p, m in _linear_paths(model) if isinstance(m, LoRALinear)]


def has_adapters(model) -> bool:
    return bool(lora_layers(model))


def set_adapters(model, enabled: bool):
    """Switch every adapter on or off, in place (static: a model split after this has another
    graphdef). Returns ``model``."""
    for _, m in lora_layers(model):
        m.lora_enabled = bool(enabled)
    return model


def set_dropout_key(model, key: jax.Array) -> None:
    """Give every adapter with dropout its own key (``fold_in(key, i)``), in place. Only on a model
    merged inside a traced update step; without a key, adapters run without dropout."""
    for i, (_, m) in enumerate(lora_layers(model)):
        if m.lora_dropout > 0:
            m.lora_dropout_key = jax.random.fold_in(key, i)


def merge_lora(model: Transformer, *, adapters: bool = True) -> Transformer:
    """A plain ``Transformer`` (no adapters) with ``W' = W + (α / r) A B`` in every adapted layer
    (QLoRA: ``W`` dequantised); its logits equal the adapted model's up to float rounding.
    ``adapters=False``: the base alone, ``W' = W`` (what the adapters were trained on). Other
    parameters are shared with ``model``."""
    model = nnx.merge(*nnx.split(model))
    for _, m in lora_layers(model):
        w = m.base_kernel()
        if adapters:
            w = (w.astype(jnp.float32) + m.lora_scale * (m.lora_a[...] @ m.lora_b[...])).astype(w.dtype)
        for name in ("lora_a", "lora_b", "lora_scale", "lora_dropout", "lora_enabled"):
            delattr(m, name)
        m.kernel = nnx.Param(w)
        m.__class__ = nnx.Linear
    return model
