"""Small helpers shared by the sanity tests of the textbook losses (no library imports)."""

import jax.numpy as jnp
import numpy as np

EPS = 1e-6  # the default std_eps of the group-normalised textbook losses


def f32(x):
    return jnp.asarray(x, dtype=jnp.float32)


def close(a, b, atol=1e-6):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=1e-5)
