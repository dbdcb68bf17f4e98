"""A critic: the decoder with a scalar value head (PPO).

``values[b, t] = V(q, o_<t)``, the value of the state in which token ``t`` is generated, so
``values`` is aligned with ``tokens`` like ``sequence_logprobs`` (``values[:, 0] = 0``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from upt_jax.models.config import ModelConfig
from upt_jax.models.transformer import Transformer


class ValueModel(nnx.Module):
    """``Transformer`` backbone + ``value_head: [D] → []`` (zero-initialised)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, remat: str = "none"):
        self.cfg = cfg
        self.backbone = Transformer(cfg, rngs=rngs, remat=remat)
        self.value_head = nnx.Linear(
            cfg.hidden_size,
            1,
            dtype=cfg.jnp_dtype,
            param_dtype=cfg.jnp_param_dtype,
            kernel_init=nnx.initializers.zeros,
            rngs=rngs,
        )

    def __call__(self, tokens: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        """``tokens [B, T]``, ``attention_mask [B, T]`` → ``values [B, T]`` fp32 (aligned, 0 at t = 0)."""
        h, _ = self.backbone.hidden_states(tokens, attention_mask=attention_mask)
        v = self.value_head(h)[..., 0].astype(jnp.float32)  # V of the state after token t
        return jnp.pad(v[:, :-1], ((0, 0), (1, 0)))


def value_model_from(policy: Transformer, seed: int = 0) -> ValueModel:
    """A critic whose backbone starts from ``policy``'s parameters (a copy) and a zero head."""
    critic = ValueModel(policy.cfg, rngs=nnx.Rngs(params=seed), remat=policy.remat)
    nnx.update(critic.backbone, jax.tree.map(jnp.copy, nnx.state(policy)))
    return critic


def value_loss(values: jax.Array, old_values: jax.Array, returns: jax.Array, mask: jax.Array, clip: float | None = 0.2):
    """Clipped value loss (PPO2): ``½ max((V − R)², (clip(V, V_old ± ε) − R)²)``.

    Args:
      values, old_values, returns, mask: ``[B, T]``.
      clip: ``ε`` (``None``: unclipped ``½ (V − R)²``).
    Returns:
      ``(loss_sum [], denominator [])``: sum over valid tokens and their count.
    """
    m = mask.astype(jnp.float32)
    err = jnp.square(values - returns)
    if clip is not None:
        clipped = old_values + jnp.clip(values - old_values, -clip, clip)
        err = jnp.maximum(err, jnp.square(clipped - returns))
    return jnp.sum(0.5 * err * m), jnp.sum(m)


def explained_variance(values: jax.Array, returns: jax.Array, mask: jax.Array) -> jax.Array:
    """``1 − Var(R − V) / Var(R)`` over the tokens of ``mask`` (the fraction of the returns'
    variance the critic's values explain: 1 perfect, 0 no better than a constant, < 0 worse; 0 when
    the returns do not vary).

    Args:
      values, returns, mask: ``[B, T]`` (values before the critic's update on this batch).
    Returns:
      ``[]`` fp32.
    """
    m = mask.astype(jnp.float32)
    n = jnp.maximum(jnp.sum(m), 1.0)
    var = lambda x: jnp.sum(m * jnp.square(x - jnp.sum(m * x) / n)) / n  # noqa: E731
    var_r = var(returns)
    return jnp.where(var_r > 0, 1.0 - var(returns - values) / jnp.where(var_r > 0, var_r, 1.0), 0.0)
