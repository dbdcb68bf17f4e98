"""A user's module outside ``upt_jax``: a new advantage estimator, registered when imported.

A recipe that uses it records ``tests.train.user_parts:length_penalised_advantages`` as the part's
import path, so a new process (``upt train`` resuming the run) imports this module, whose top
level registers the part again.
"""

import jax.numpy as jnp

from upt_jax import upge


def length_penalised_advantages(c, coef=0.5):
    """``Â_i = (r_i − mean_g r) − coef · (|y_i| − mean_g |y|) / T``: a group baseline on the reward
    and on the response length (shorter than the group's mean: a bonus). ``[B]``."""
    lengths = jnp.sum(c.mask, axis=-1)
    r_mean, _, _ = upge.group_statistics(c.rewards, c.group_size, c.rows)
    l_mean, _, _ = upge.group_statistics(lengths, c.group_size, c.rows)
    return ((c.rewards - r_mean) - coef * (lengths - l_mean) / c.mask.shape[-1]) * c.rows


upge.register_advantage("length_penalised", length_penalised_advantages, needs=upge.Needs(batch=("rewards",), groups=2))
