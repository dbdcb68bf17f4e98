"""``upt_jax.models.transformer.dense_cpu`` whose weight gradient transposes the narrower of the input
and the cotangent (session 18 on an Intel Xeon; session 21 on an AMD EPYC; not landed).

``dense_cpu`` computes ``∂w = xᵀ g`` from ``xᵀ`` materialised. For the down projection ``x`` is the
SwiGLU product ``[tokens, F]`` and ``g`` the ``[tokens, D]`` cotangent, so the transpose moves
``F / D`` (4 on the presets) times more data than transposing ``g`` would. This variant transposes
``g`` when it is the narrower and computes ``∂w = (gᵀ x)ᵀ``, whose final transpose is weight-sized.

    python -m benchmarks.update_ab --config tiny \
        --patch upt_jax.models.transformer.dense_cpu=benchmarks.variants.narrow_transpose:dense_cpu

Measured: 0.99× on session 18's Intel Xeon; 0.963× (IQR 0.938–1.008, 20 rounds) on session 21's
AMD EPYC, parameters 3.7e-9 apart after one step (docs/performance.md).
"""

import jax
import jax.numpy as jnp


@jax.custom_vjp
def dense_cpu(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x [..., D] · w [D, F] → [..., F]``."""
    return jnp.einsum("...d,df->...f", x, w)


def _fwd(x, w):
    return dense_cpu(x, w), (x, w)


def _bwd(res, g):
    x, w = res
    dx = jnp.einsum("...f,df->...d", g, w)
    x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
    if x2.shape[1] <= g2.shape[1]:  # as upt_jax: transpose the input
        x_t = jax.lax.optimization_barrier(x2.T)  # [D, tokens]
        return dx, (x_t @ g2).astype(w.dtype)
    g_t = jax.lax.optimization_barrier(g2.T)  # the narrower cotangent: [F, tokens]
    return dx, (g_t @ x2).T.astype(w.dtype)


dense_cpu.defvjp(_fwd, _bwd)
