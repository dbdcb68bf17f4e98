"""Random token batches for training tests (rollouts with behaviour log-probs, demonstrations)."""

import numpy as np
import jax.numpy as jnp


def rl_batch(
    vocab: int,
    *,
    groups: int = 4,
    group_size: int = 4,
    prompt_len: int = 5,
    resp_len: int = 7,
    seed: int = 0,
    demo_rows: bool = False,
):
    """``tokens/attention_mask/mask [B, L]``, ``rewards [B]``, ``old_logp [B, L]`` (and ``is_demo``).

    Prompts are left-padded, responses right-padded with ragged lengths; rewards are 0/1 with
    mixed groups; ``old_logp`` is random so importance ratios differ from 1 and clipping acts.
    """
    rng = np.random.RandomState(seed)
    b, L = groups * group_size, prompt_len + resp_len
    tokens = np.zeros((b, L), np.int32)
    attn = np.zeros((b, L), np.int32)
    mask = np.zeros((b, L), np.float32)
    for i in range(b):
        p = rng.randint(2, prompt_len + 1)
        r = rng.randint(1, resp_len + 1)
        tokens[i, prompt_len - p : prompt_len + r] = rng.randint(1, vocab, p + r)
        attn[i, prompt_len - p : prompt_len + r] = 1
        mask[i, prompt_len : prompt_len + r] = 1
    rewards = rng.randint(0, 2, b).astype(np.float32)
    old_logp = (-2.0 + 0.3 * rng.randn(b, L)).astype(np.float32) * mask
    out = dict(
        tokens=jnp.asarray(tokens),
        attention_mask=jnp.asarray(attn),
        mask=jnp.asarray(mask),
        rewards=jnp.asarray(rewards),
        old_logp=jnp.asarray(old_logp),
    )
    if demo_rows:
        out["is_demo"] = jnp.asarray(np.arange(b) % group_size == group_size - 1)
    return out
