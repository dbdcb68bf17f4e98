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

# bound at import: update_ab patches transformer.dense_cpu with this module's, after importing it
from upt_jax.models.transformer import dense_cpu as upt_dense_cpu


@jax.custom_vjp
def dense_cpu(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x [..., D] · w [D, F] → [..., F]``: upt_jax's product."""
    return upt_dense_cpu(x, w)


def _fwd(x, w):
    return dense_cpu(x, w), (x, w)


def _bwd(res, g):
    x, w = res
    if x.shape[-1] <= g.shape[-1]:  # the input is the narrower: upt_jax's own backward
        return jax.vjp(upt_dense_cpu, x, w)[1](g)
    g_t = jax.lax.optimization_barrier(g.reshape(-1, g.shape[-1]).T)  # the narrower cotangent: [F, tokens]
    dx = jnp.einsum("...f,df->...d", g, w)
    return dx, (g_t @ x.reshape(-1, x.shape[-1])).T.astype(w.dtype)


dense_cpu.defvjp(_fwd, _bwd)
