"""``benchmarks/decode_floor.py``: the decode step's matmuls are the model's weight matrices, their
per-step sums and the ratios read from them are arithmetic on the measured times, and the whole
command runs on a tiny model."""

import math

import jax
import numpy as np
import pytest
from flax import nnx

from benchmarks import decode_floor
from upt_jax.models import init_model, preset


def test_step_matmuls_are_the_models_weight_matrices():
    cfg = preset("tiny")
    shapes = decode_floor.step_matmuls(cfg, batch=4)
    assert len(shapes) == 7 * cfg.num_layers + 1 and shapes[-1] == ("head", 4, 256, 4096)
    assert all(m == 4 for _, m, _, _ in shapes)
    # every 2-D weight of the model but the embedding, read from the model itself
    model = init_model(cfg, 0)
    kernels = sorted(
        tuple(x.shape)
        for path, x in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))
        if x.ndim == 2 and "embed_tokens" not in jax.tree_util.keystr(path)
    )
    assert sorted((k, n) for _, _, k, n in shapes) == kernels


def test_chain_follows_the_models_dependencies():
    cfg = preset("tiny", num_layers=2, vocab_size=64)
    shapes = decode_floor.step_matmuls(cfg, batch=2)
    rng = np.random.RandomState(0)
    ws = [rng.randn(k, n) * 0.1 for _, _, k, n in shapes]
    xs = {k: rng.randn(m, k) for _, m, k, _ in shapes}
    calls = []

    def add(x, *ys):
        calls.append((x.shape[1], tuple(y.shape[1] for y in ys)))
        return x + sum(y[:1, :1] for y in ys)

    out = decode_floor.chain(xs, ws, [s[0] for s in shapes], add)
    # the same step written out: q, k, v read x; o waits for them; gate, up wait for o; down for both
    x = xs[256]
    for layer in range(2):
        q, k, v = (x @ ws[7 * layer + j] for j in range(3))
        o = (xs[256] + q[:1, :1] + k[:1, :1] + v[:1, :1]) @ ws[7 * layer + 3]
        h = xs[256] + o[:1, :1]
        g, u = h @ ws[7 * layer + 4], h @ ws[7 * layer + 5]
        d = (xs[1024] + g[:1, :1] + u[:1, :1]) @ ws[7 * layer + 6]
        x = xs[256] + d[:1, :1]
    np.testing.assert_allclose(out, x @ ws[-1], rtol=1e-12)
    # (input width, widths of the outputs it waits for), call by call: layer 0's q, k, v read x as is
    o_gate_up_down = [(256, (256, 128, 128)), (256, (256,)), (256, (256,)), (1024, (1024, 1024))]
    assert calls == o_gate_up_down + [(256, (256,))] * 3 + o_gate_up_down + [(256, (256,))]


@pytest.mark.slow
def test_the_command_runs_on_tiny_and_renders(tmp_path):
    out = tmp_path / "floor.json"
    (row,) = decode_floor.main(
        ["--config", "tiny", "--batch", "2", "--new-tokens", "4", "--repeats", "5", "--json", str(out)]
    )
    assert 0 < row["xla_head_ms"] < row["xla_ms"] and 0 < row["torch_head_ms"] < row["torch_ms"]
    weights = 4 * (2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 1024) + 256 * 4096  # tiny: 4 layers and the head
    assert row["weights_mb"] == round(weights * 4 / 1e6, 1)
    gen_s = row["generate_step_ms"] / 1e3
    assert math.isclose(row["ratio_at_xla_floor"], gen_s / (row["xla_ms"] / 1e3), rel_tol=0.02)
    assert math.isclose(row["target_step_ms"], row["generate_step_ms"] / 3.0, rel_tol=1e-3)
    table = "\n".join(decode_floor.table([row]))
    assert "| tiny | 2 |" in table and row["host"]
