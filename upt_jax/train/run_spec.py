"""What a run's config implies, before anything is built: the recipe it trains, whether its groups
carry a demonstration, its critic, its rollout temperature, kept-set replay, its group size and
mesh sizes. Pure functions of the config (and the recipe value, when given)."""

from __future__ import annotations

import numpy as np

from upt_jax.train.kto import uses_kto

__all__ = [
    "get_recipe",
    "uses_demos",
    "critic_spec",
    "rollout_temperature",
    "sampling_temperature",
    "behaviour_recomputed",
    "kept_set_replay",
    "mesh_sizes",
    "group_size",
    "is_remote",
]


def get_recipe(config, recipe=None):
    """The recipe a run of ``config`` trains (``recipe`` when given; see `recipe_io.get_recipe`)."""
    from upt_jax.train.recipe_io import get_recipe as resolve

    return resolve(config, recipe)


def uses_demos(config, recipe=None) -> bool:
    """Whether the run's groups carry a demonstration row (HPT, LUFFY, SRFT)."""
    from upt_jax import upge

    return upge.requirements(get_recipe(config, recipe)).demos


def critic_spec(recipe):
    """``(gamma, lam, kl_penalty_or_None)`` when a part of the recipe reads a critic's values (GAE,
    PPO), else None."""
    from upt_jax import upge

    use = upge.requirements(recipe).critic
    if use is None:
        return None
    kw = use.part.kw
    return kw.get("gamma", 1.0), kw.get("lam", 0.95), use.kl


def rollout_temperature(config) -> float:
    """The temperature τ of the policy an online run trains: its rollouts' sampling temperature
    (1 for greedy rollouts, see `upt_jax.sampling.policy_temperature`); 1 for offline and
    preference data, which no sampler drew."""
    if config.mode != "online":
        return 1.0
    if config.rollout.get("train_temperature") is not None:  # the ablation: `behaviour_recomputed`
        return float(config.rollout.train_temperature)
    return sampling_temperature(config)


def sampling_temperature(config) -> float:
    """The temperature of the policy ``config.rollout`` samples from (1 for greedy rollouts,
    `upt_jax.sampling.policy_temperature`)."""
    from upt_jax.sampling import SamplingParams, policy_temperature

    return policy_temperature(SamplingParams(temperature=float(config.rollout.temperature)))


def behaviour_recomputed(config) -> bool:
    """Whether an online run trains π_θ at a temperature other than the sampling one
    (``rollout.train_temperature``, an ablation: at 1 with ``rollout.temperature`` 0.7 it is
    upt_jax before issue #17's fix, the τ = 1 policy's gradient on samples drawn at 0.7). Its
    behaviour log-probs are then recomputed at the trained temperature with the pre-update
    parameters (`upt_jax.train.frozen.frozen_inputs`), not the sampler's, so the first ratio is 1."""
    return config.mode == "online" and rollout_temperature(config) != sampling_temperature(config)


def kept_set_replay(config) -> bool:
    """Whether an online run trains the top-k/top-p truncated policy its rollouts were drawn from
    (``rollout.kept_set_replay`` and truncation on, not greedy): π_θ^τ renormalised over each
    token's kept set, behaviour log-probs the sampler's ``sampling_logprobs``."""
    r = config.rollout
    truncating = int(r.top_k) > 0 or float(r.top_p) < 1.0
    return bool(r.get("kept_set_replay", True)) and truncating and float(r.temperature) > 0


def mesh_sizes(config, n_devices: int) -> tuple[int, int, int]:
    """``(data, fsdp, tensor)`` of ``config.mesh`` with its ``-1`` resolved (after the fit check)."""
    sizes = [int(s) for s in (config.mesh.data, config.mesh.fsdp, config.mesh.tensor)]
    known = int(np.prod([s for s in sizes if s != -1]))
    return tuple(n_devices // known if s == -1 else s for s in sizes)


def group_size(config, with_demos: bool) -> int:
    """Rows per question: ``rollout.n`` (+1 with a demonstration) online, a pair for preferences
    (1 for KTO's unpaired rows), 1 offline."""
    if config.mode == "online":
        return int(config.rollout.n) + int(with_demos)
    if config.mode == "preference":
        return 1 if uses_kto(get_recipe(config)) else 2  # KTO: unpaired rows
    return 1


def is_remote(path) -> bool:
    return "://" in str(path)
