"""Random ragged batches for the UPGE tests (shared by the test modules)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import upt_jax.upge as upge


def ragged_mask(rng, b, t, min_len=1, holes=False):
    """``[B, T]`` right-padded mask with lengths in ``[min_len, T]`` (optionally with holes)."""
    lengths = rng.integers(min_len, t + 1, size=b)
    lengths[rng.integers(0, b)] = t  # at least one full row
    mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
    if holes:
        hole = rng.random((b, t)) < 0.15
        hole[:, 0] = False
        mask = mask * (~hole)
    return mask


def _garbage(rng, x, mask, scale=30.0):
    """Puts large random values on padded positions (they must never matter)."""
    m = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
    return np.where(m > 0, x, rng.normal(size=x.shape) * scale).astype(np.float32)


def random_batch(
    seed,
    b=16,
    t=8,
    group_size=4,
    *,
    demo_last=False,
    vocab=None,
    old_noise=0.3,
    holes=False,
    binary_rewards=True,
    min_len=1,
    pad_scale=30.0,
):
    """A random batch with every key any recipe may need.

    ``logp`` is log of probabilities in (0.02, 0.98); ``old_logp``/``ref_logp``
    are perturbations of it (so clips hit on both sides); padded positions hold
    garbage. With ``demo_last`` the last row of every group is a demonstration.
    With ``vocab`` the batch also holds student/teacher logits ``[B, T, V]``.
    """
    rng = np.random.default_rng(seed)
    garbage = lambda r, x, m: _garbage(r, x, m, pad_scale)
    mask = ragged_mask(rng, b, t, min_len=min_len, holes=holes)
    logp = np.log(rng.uniform(0.02, 0.98, size=(b, t))).astype(np.float32)
    old = logp + old_noise * rng.normal(size=(b, t)).astype(np.float32)
    ref = logp + old_noise * rng.normal(size=(b, t)).astype(np.float32)
    if binary_rewards:
        rewards = rng.integers(0, 2, size=b).astype(np.float32)
    else:
        rewards = rng.normal(size=b).astype(np.float32)
    is_demo = np.zeros(b, bool)
    if demo_last:
        is_demo[group_size - 1 :: group_size] = True
        rewards[is_demo] = 1.0
    batch = dict(
        mask=mask,
        old_logp=garbage(rng, old, mask),
        ref_logp=garbage(rng, ref, mask),
        rewards=rewards,
        values=garbage(rng, rng.normal(size=(b, t)).astype(np.float32) * 0.5, mask),
        baseline_rewards=rng.integers(0, 2, size=b).astype(np.float32),
        teacher_logp=garbage(rng, logp + 0.5 * rng.normal(size=(b, t)).astype(np.float32), mask),
        entropy=garbage(rng, rng.uniform(0.05, 3.0, size=(b, t)).astype(np.float32), mask),
        rollout_logp=garbage(rng, old + 0.2 * rng.normal(size=(b, t)).astype(np.float32), mask),
        is_demo=is_demo,
    )
    # KTO: unpaired labels and the batch's reference point z0 (own stream: the draws above are unchanged)
    kto_rng = np.random.default_rng(seed + 7919)
    batch["kto_label"] = kto_rng.integers(0, 2, size=b).astype(np.float32)
    batch["kto_z0"] = np.full(b, kto_rng.uniform(0.0, 0.5), np.float32)
    if vocab:
        batch["student_logits"] = rng.normal(size=(b, t, vocab)).astype(np.float32) * 2
        batch["teacher_logits"] = rng.normal(size=(b, t, vocab)).astype(np.float32) * 2
    out = {k: jnp.asarray(v) for k, v in batch.items()}
    return jnp.asarray(garbage(rng, logp, mask)), out


# recipe name -> (constructor kwargs, group size, batch kwargs)
RECIPE_SETUPS = {
    "sft": ({}, 1, {}),
    "reinforce": ({}, 1, {}),
    "ppo": ({}, 1, {}),
    "grpo": ({}, 4, {}),
    "grpo_kl": ({"kl_coef": 0.04}, 4, {}),
    "dr_grpo": ({}, 4, {}),
    "dapo": ({}, 4, {}),
    "gspo": ({}, 4, {"old_noise": 4e-4}),
    "cispo": ({}, 4, {}),
    "rloo": ({}, 4, {}),
    "rloo_ppo": ({}, 4, {}),
    "reinforce_pp": ({}, 4, {}),
    "reinforce_pp_plain": ({"baseline": False, "kl_coef": 0.05}, 4, {}),
    "remax": ({}, 1, {}),
    "dpo": ({"label_smoothing": 0.1}, 2, {}),
    "ipo": ({}, 2, {}),
    "ipo_length_avg": ({}, 2, {}),
    "simpo": ({}, 2, {}),
    "orpo": ({}, 2, {}),
    "kto": ({}, 1, {}),
    "sapo": ({}, 4, {}),
    "gmpo": ({}, 4, {}),
    "gpg": ({}, 4, {}),
    "clip_cov": ({"ratio": 0.05, "cov_low": 0.0, "cov_high": 10.0}, 4, {}),
    "kl_cov": ({"ratio": 0.05}, 4, {}),
    "dppo_tv": ({}, 4, {}),
    "dppo_kl": ({"is_cap": 2.0}, 4, {}),
    "opd_pg": ({"alpha": 0.5}, 4, {}),
    "distill_fkl": ({}, 1, {"vocab": 11}),
    "distill_fkl_topk": ({"top_k": 3}, 1, {"vocab": 11}),
    "distill_on_policy": ({}, 1, {}),
    "luffy": ({}, 4, {"demo_last": True}),
    "srft": ({}, 4, {"demo_last": True}),
    "hpt_paper_text": ({}, 4, {"demo_last": True}),
    "hpt_released_code": ({}, 4, {"demo_last": True}),
}

_BASE = {"grpo_kl": "grpo", "reinforce_pp_plain": "reinforce_pp", "distill_fkl_topk": "distill_fkl"}


def recipe_case(key, seed=0, b=16, t=8):
    """``(recipe, logp, batch, group_size)`` for a `RECIPE_SETUPS` key.

    For vocabulary-level recipes ``logp`` is the student's log-softmax ``[B, T, V]``.
    """
    kwargs, g, bkw = RECIPE_SETUPS[key]
    recipe = upge.get_recipe(_BASE.get(key, key), **kwargs)
    logp, batch = random_batch(seed, b=b, t=t, group_size=max(g, 1), **bkw)
    if "vocab" in bkw:
        logp = jax.nn.log_softmax(batch["student_logits"], axis=-1)
    return recipe, logp, batch, g
