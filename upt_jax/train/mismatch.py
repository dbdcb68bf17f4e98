"""The sampler-vs-trainer mismatch of an online run's log-probs, logged every step.

`rollout_mismatch` gives sums that add over micro-batches (and a max), `over_microbatches`
reduces a step's per-micro-batch metrics, `finish_mismatch` turns the sums into means: the
logged ``mismatch/abs_max``, ``mismatch/abs_mean`` and ``mismatch/kl_k3`` are the whole batch's
whatever the micro-batching.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


_MB_SUMS = ("mismatch/abs_sum", "mismatch/kl_k3_sum", "mismatch/tokens")  # added over micro-batches


def rollout_mismatch(logp: jax.Array, batch: dict) -> dict:
    """Sampler-vs-trainer mismatch on the sampled tokens, as sums that add over micro-batches.

    Math: ``Δ_t = log π_trainer(o_t) − log π_rollout(o_t)`` (``logp`` the trainer's, no gradient;
    ``rollout_logp`` the distribution the sampler drew ``o_t`` from) and the ``k3`` estimate of
    ``KL(π_rollout ‖ π_trainer)`` on those samples, ``e^{Δ} − 1 − Δ``. Returns
    ``mismatch/abs_max`` (reduce with max), ``mismatch/abs_sum``, ``mismatch/kl_k3_sum`` and
    ``mismatch/tokens`` (reduce with sums); `finish_mismatch` turns them into means.

    Args:
      logp: ``[B, T]`` the trainer's log-probs.
      batch: ``rollout_logp [B, T]``, ``mask [B, T]`` and (optional) ``is_demo [B]``: the sampled
        tokens are the response tokens of the rows that are not demonstrations.
    """
    from upt_jax import upge

    rollout_logp = batch["rollout_logp"]
    rows = 1.0 - jnp.asarray(batch.get("is_demo", jnp.zeros(batch["mask"].shape[:1], bool)), jnp.float32)
    mask = batch["mask"] * rows[:, None]
    d = jnp.where(mask > 0, jax.lax.stop_gradient(logp) - rollout_logp, 0.0)
    k3 = upge.kl_estimate(rollout_logp, jax.lax.stop_gradient(logp), "k3")
    return {
        "mismatch/abs_max": jnp.max(jnp.abs(d)),
        "mismatch/abs_sum": jnp.sum(jnp.abs(d)),
        "mismatch/kl_k3_sum": upge.masked_sum(k3, mask),
        "mismatch/tokens": jnp.sum(mask),
    }


def finish_mismatch(metrics: dict) -> dict:
    """`rollout_mismatch`'s sums (already reduced over micro-batches) → ``mismatch/abs_max``,
    ``mismatch/abs_mean`` and ``mismatch/kl_k3`` (means over the sampled tokens)."""
    if "mismatch/tokens" not in metrics:
        return metrics
    out = {k: v for k, v in metrics.items() if k not in _MB_SUMS}
    n = jnp.maximum(metrics["mismatch/tokens"], 1.0)
    out["mismatch/abs_mean"] = metrics["mismatch/abs_sum"] / n
    out["mismatch/kl_k3"] = metrics["mismatch/kl_k3_sum"] / n
    return out


def over_microbatches(k: str, v: jax.Array) -> jax.Array:
    """A metric ``[M, ...]`` of ``M`` micro-batches reduced: sums for ``loss/*`` and `rollout_mismatch`'s
    sums, the max for ``mismatch/abs_max``, else the mean."""
    if k.startswith("loss/") or k in _MB_SUMS:
        return jnp.sum(v, axis=0)
    return jnp.max(v, axis=0) if k == "mismatch/abs_max" else jnp.mean(v, axis=0)
