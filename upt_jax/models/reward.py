"""Reward models: the decoder with a scalar head, read at the last real token (outcome reward)
or at every token (process reward at step boundaries).

Bradley–Terry training on preference pairs (Ouyang et al. 2022; Christiano et al. 2017):

    L = −(1 − ε) log σ(r_c − r_r − m) − ε log σ(−(r_c − r_r − m))

with margin ``m`` and label smoothing ``ε``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from upt_jax.models.config import ModelConfig
from upt_jax.models.transformer import Transformer


def last_token_index(attention_mask: jax.Array) -> jax.Array:
    """``[B, T]`` 0/1 mask (left or right padded) → ``[B]`` index of each row's last real token."""
    t = attention_mask.shape[1]
    idx = jnp.arange(t)[None, :]
    return jnp.max(jnp.where(attention_mask > 0, idx, -1), axis=1).clip(0)


class RewardModel(nnx.Module):
    """``Transformer`` backbone + ``score_head: [D] → []``.

    ``model(tokens, attention_mask)`` → ``[B]`` scores read at the last real token;
    ``model.token_scores(...)`` → ``[B, T]`` scores after every token.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, remat: str = "none"):
        self.cfg = cfg
        self.backbone = Transformer(cfg, rngs=rngs, remat=remat)
        self.score_head = nnx.Linear(
            cfg.hidden_size,
            1,
            dtype=cfg.jnp_dtype,
            param_dtype=cfg.jnp_param_dtype,
            kernel_init=nnx.initializers.normal(1.0 / cfg.hidden_size**0.5),
            rngs=rngs,
        )

    def token_scores(self, tokens: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        """``tokens [B, T]`` → ``[B, T]`` fp32: the head applied to every position's hidden state."""
        h, _ = self.backbone.hidden_states(tokens, attention_mask=attention_mask)
        return self.score_head(h)[..., 0].astype(jnp.float32)

    def __call__(self, tokens: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        """``tokens [B, T]`` → ``[B]`` fp32 outcome scores (at each row's last real token)."""
        if attention_mask is None:
            attention_mask = jnp.ones(tokens.shape, jnp.int32)
        s = self.token_scores(tokens, attention_mask)
        return jnp.take_along_axis(s, last_token_index(attention_mask)[:, None], axis=1)[:, 0]


def reward_model_from(policy: Transformer, seed: int = 0) -> RewardModel:
    """A reward model whose backbone starts from ``policy``'s parameters (a copy)."""
    rm = RewardModel(policy.cfg, rngs=nnx.Rngs(params=seed), remat=policy.remat)
    nnx.update(rm.backbone, jax.tree.map(jnp.copy, nnx.state(policy)))
    return rm


def bradley_terry_loss(chosen: jax.Array, rejected: jax.Array, *, margin: float = 0.0, label_smoothing: float = 0.0):
    """Bradley–Terry pair loss.

    Args:
      chosen, rejected: ``[P]`` scores of the preferred and the other response of each pair.
      margin: ``m`` the chosen score must exceed the rejected one by.
      label_smoothing: ``ε``, the assumed fraction of flipped labels.
    Returns:
      ``(loss_sum [], num_pairs [], accuracy [])``; accuracy is ``mean(chosen > rejected)``.
    """
    d = chosen - rejected - margin
    loss = -(1.0 - label_smoothing) * jax.nn.log_sigmoid(d) - label_smoothing * jax.nn.log_sigmoid(-d)
    return jnp.sum(loss), jnp.asarray(chosen.shape[0], jnp.float32), jnp.mean((chosen > rejected).astype(jnp.float32))
