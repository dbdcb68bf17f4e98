"""Path-based partition rules for the ``('data', 'fsdp', 'tensor')`` mesh.

A rule is ``(regex, PartitionSpec)``; a parameter's path is its NNX state path joined by
``/`` (e.g. ``layers/3/self_attn/q_proj/kernel``) and the first rule whose regex
``re.search``-matches it gives its spec. Kernels are stored ``[in, out]``: column-parallel
layers (q/k/v, gate/up, lm_head) shard ``out`` over ``tensor`` and ``in`` over ``fsdp``;
row-parallel layers (o, down) the other way round. LoRA factors (``lora_a [in, r]``,
``lora_b [r, out]``) take their kernel's ``in`` / ``out`` sharding with the rank replicated, and
QLoRA's quantised kernels (``kernel/qvalue``, ``kernel/scale``) their kernel's spec. A mesh
axis that does not divide the dimension it would shard is dropped for that parameter
(replicated on that dimension) so that any config loads on any mesh; ``resolve_spec`` reports what it did.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Iterable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")

Rules = Sequence[tuple[str, P]]

DEFAULT_RULES: Rules = (
    (r"embed_tokens/embedding$", P("tensor", "fsdp")),
    (r"self_attn/(q|k|v)_proj/kernel(/qvalue|/scale)?$", P("fsdp", "tensor")),
    (r"self_attn/(q|k|v)_proj/bias$", P("tensor")),
    (r"self_attn/o_proj/kernel(/qvalue|/scale)?$", P("tensor", "fsdp")),
    (r"mlp/(gate|up)_proj/kernel(/qvalue|/scale)?$", P("fsdp", "tensor")),
    (r"mlp/(gate|up)_proj/bias$", P("tensor")),
    (r"mlp/down_proj/kernel(/qvalue|/scale)?$", P("tensor", "fsdp")),
    # LoRA factors A [in, r], B [r, out]: the kernel's in/out sharding, rank replicated
    (r"(self_attn/(q|k|v)|mlp/(gate|up))_proj/lora_a$", P("fsdp", None)),
    (r"(self_attn/(q|k|v)|mlp/(gate|up))_proj/lora_b$", P(None, "tensor")),
    (r"(self_attn/o|mlp/down)_proj/lora_a$", P("tensor", None)),
    (r"(self_attn/o|mlp/down)_proj/lora_b$", P(None, "fsdp")),
    (r"lm_head/kernel$", P("fsdp", "tensor")),
    (r"value_head/kernel$", P("fsdp", None)),
    (r".*", P()),  # norms, remaining biases, scalars: replicated
)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``('data', 'fsdp', 'tensor')`` mesh; one size may be ``-1`` (all remaining devices)."""
    devices = list(devices if devices is not None else jax.devices())
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got data={data} fsdp={fsdp} tensor={tensor}")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices are not divisible by fsdp*tensor*data={known}")
        sizes[sizes.index(-1)] = len(devices) // known
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(
            f"mesh data={sizes[0]} × fsdp={sizes[1]} × tensor={sizes[2]} = {int(np.prod(sizes))} "
            f"does not match the {len(devices)} available devices"
        )
    return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


def path_to_str(path: Iterable[Any]) -> str:
    """A jax key path or an NNX state path → ``"layers/0/mlp/up_proj/kernel"``."""
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.GetAttrKey):
            if k.name in ("value", "raw_value"):
                continue
            parts.append(k.name)
        elif isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        else:
            parts.append(str(k))
    return "/".join(parts)


def match_rule(path: str, rules: Rules) -> P:
    """The spec of the first rule whose regex matches ``path`` (replicated if none)."""
    for pattern, spec in rules:
        if re.search(pattern, path):
            return spec
    return P()


def resolve_spec(spec: P, shape: Sequence[int], mesh: Mesh, path: str = "") -> P:
    """Fit ``spec`` to ``shape`` on ``mesh``: pad/truncate to the rank, drop axes that do not divide."""
    entries = list(spec) + [None] * (len(shape) - len(spec))
    entries = entries[: len(shape)]
    out = []
    for dim, axis in zip(shape, entries):
        if axis is None:
            out.append(None)
            continue
        names = axis if isinstance(axis, tuple) else (axis,)
        size = int(np.prod([mesh.shape[n] for n in names]))
        if dim % size:
            log.info("%s: dim %d not divisible by mesh axis %s (%d); replicated", path, dim, axis, size)
            out.append(None)
        else:
            out.append(axis)
    return P(*out)


def param_specs(state: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """A pytree like ``state`` (arrays or ``ShapeDtypeStruct``) of resolved ``PartitionSpec``."""

    def spec(path, leaf):
        p = path_to_str(path)
        return resolve_spec(match_rule(p, rules), np.shape(leaf), mesh, p)

    return jax.tree_util.tree_map_with_path(spec, state)


def param_shardings(state: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """A pytree like ``state`` of ``NamedSharding`` from the partition rules."""
    return jax.tree.map(
        lambda s: NamedSharding(mesh, s), param_specs(state, mesh, rules), is_leaf=lambda x: isinstance(x, P)
    )


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Batch arrays ``[B, ...]``: the batch dimension over ``('data', 'fsdp')``."""
    return NamedSharding(mesh, P(("data", "fsdp"), *([None] * (ndim - 1))))


def batch_shards(mesh: Mesh | None) -> int:
    """How many ways ``batch_sharding`` splits the batch rows (``data × fsdp``; 1 without a mesh)."""
    return 1 if mesh is None else mesh.shape["data"] * mesh.shape["fsdp"]


def shard_model(model, mesh: Mesh, rules: Rules = DEFAULT_RULES):
    """Place an NNX model's parameters on ``mesh`` as the rules say (in place; returns model)."""
    from flax import nnx

    state = nnx.state(model)
    sharded = jax.device_put(state, param_shardings(state, mesh, rules))
    nnx.update(model, sharded)
    return model
