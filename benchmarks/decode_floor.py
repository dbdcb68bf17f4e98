"""What a decode step's matmuls alone cost, in XLA and in PyTorch, against the sampler's target.

    python -m benchmarks.decode_floor --config small      # 32 rows × 64 new tokens, ~3 min
    python -m benchmarks.decode_floor --config tiny small

A decode step of ``B`` rows multiplies ``[B, D]`` activations by every weight matrix once: per layer
the q, k, v, o, gate, up and down projections, then the output head. This runs exactly those
products, one step's worth, each with its own weight matrix (fp32, random; so the weights stream
from memory as in real decoding: the small preset's 187 MB are several times a server CPU's L3
cache), each product waiting for the ones the model makes it wait for (`chain`: q, k and v
together, then o, gate and up together, then down; nothing is hoisted or shared): in XLA as one
jitted program, which may run independent products concurrently as the sampler's does, in PyTorch
eagerly (its threads set as in the other benchmarks). The best of ``--repeats`` after a warm-up is
what the step's matmuls alone cost in each library; the head is also timed alone.

In the same run `benchmarks.sampler_bench` measures upt_jax's sampler and transformers
``generate`` (no Tunix) on the same shapes, so each step time stands beside those costs: a sampler
at ``r ×`` ``generate``'s tokens/s must finish a step in ``generate``'s step time ``/ r``, and the
last two columns are the ratio a step costing just the matmuls would reach. They are a reference,
not a bound: attention, norms, RoPE and sampling are left out, but a sampler can also run its
matmuls faster than one serial chain of them (row chunks decoded concurrently, ``streams``;
weights that stay in cache), as the tiny preset's does.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

TARGET = 3.0  # issue #25: the sampler at ≥ 3× transformers `generate`


def step_matmuls(cfg, batch: int) -> list[tuple[str, int, int, int]]:
    """``(name, M, K, N)`` of every matmul of one decode step of ``batch`` rows, in order."""
    d, hd = cfg.hidden_size, cfg.head_dim
    q, kv, f = cfg.num_heads * hd, cfg.num_kv_heads * hd, cfg.intermediate_size
    layer = [("q", d, q), ("k", d, kv), ("v", d, kv), ("o", q, d), ("gate", d, f), ("up", d, f), ("down", f, d)]
    out = [(f"layer.{n}", batch, k, n_) for _ in range(cfg.num_layers) for n, k, n_ in layer]
    return out + [("head", batch, d, cfg.vocab_size)]


def chain(xs: dict, ws: list, names: list, add):
    """One decode step's matmuls with the model's dependencies and nothing else: in each layer q, k
    and v read the layer's input, o waits for all three, gate and up for o, down for both, the
    next layer for down, the head for the last layer. An input ``xs[K]`` (of width ``K``) is made to
    wait for outputs ``ys`` by ``add(x, *ys)`` (``x + Σ y[:1, :1] · 1e-30``). ``ws``: the step's
    weights in `step_matmuls` order, ``names`` theirs. Returns the head's output (or the last)."""
    after, outs, y = [], {}, None
    for name, w in zip(names, ws):
        part = name.split(".")[-1]
        if part in ("q", "gate", "head"):
            after = [y] if y is not None else []
        wait = {"o": ("q", "k", "v"), "down": ("gate", "up")}.get(part)
        deps = [outs[p] for p in wait] if wait else after
        x = xs[w.shape[0]]
        y = outs[part] = (add(x, *deps) if deps else x) @ w
    return y


def step_floor(shapes, repeats: int, seed: int = 0) -> dict[str, float]:
    """Best seconds of one chained step of ``shapes`` (`chain`) and of its head alone, in XLA and in
    PyTorch: ``{"xla", "torch", "xla_head", "torch_head"}``."""
    import jax
    import torch

    from benchmarks.common import set_torch_threads
    from benchmarks.update_bench import best_seconds as _best

    set_torch_threads()
    rng = np.random.RandomState(seed)
    ws = [(rng.randn(k, n) * 0.02).astype(np.float32) for _, _, k, n in shapes]
    xs = {k: rng.randn(m, k).astype(np.float32) for _, m, k, _ in shapes}
    head = [w for (name, *_), w in zip(shapes, ws) if name == "head"]
    names = [name for name, *_ in shapes]
    add = lambda x, *ys: x + sum(y[:1, :1] for y in ys) * 1e-30
    f = jax.jit(lambda xs, ws: chain(xs, ws, names, add))
    f_head = jax.jit(lambda xs, ws: chain(xs, ws, ["head"], add))
    jxs, jws, jhead = jax.device_put(xs), jax.device_put(ws), jax.device_put(head)
    txs = {k: torch.from_numpy(v) for k, v in xs.items()}
    tws, thead = [torch.from_numpy(w) for w in ws], [torch.from_numpy(w) for w in head]
    with torch.no_grad():
        return {
            "xla": _best(lambda: f(jxs, jws).block_until_ready(), repeats),
            "torch": _best(lambda: chain(txs, tws, names, add), repeats),
            "xla_head": _best(lambda: f_head(jxs, jhead).block_until_ready(), repeats),
            "torch_head": _best(lambda: chain(txs, thead, ["head"], add), repeats),
        }


def floor_row(sampler_row: dict, repeats: int, target: float = TARGET) -> dict:
    """The floors of ``sampler_row``'s config and batch (a `benchmarks.sampler_bench.bench` row,
    measured in the same run) beside its step times."""
    from upt_jax.hostinfo import host
    from upt_jax.models import preset

    config, batch = sampler_row["config"], sampler_row["batch"]
    shapes = step_matmuls(preset(config), batch)
    t = step_floor(shapes, repeats)
    gen_step = batch / sampler_row["transformers_tokens_per_s"]
    return dict(
        config=config,
        batch=batch,
        new_tokens=sampler_row["new_tokens"],
        host=host(),
        **{f"{k}_ms": round(1e3 * v, 3) for k, v in t.items()},
        weights_mb=round(sum(k * n for _, _, k, n in shapes) * 4 / 1e6, 1),
        upt_jax_step_ms=round(1e3 * batch / sampler_row["upt_jax_tokens_per_s"], 3),
        upt_jax_streams=sampler_row["upt_jax_streams"],
        generate_step_ms=round(1e3 * gen_step, 3),
        ratio=sampler_row["ratio"],
        target=target,
        target_step_ms=round(1e3 * gen_step / target, 3),
        ratio_at_xla_floor=round(gen_step / t["xla"], 2),
        ratio_at_torch_floor=round(gen_step / t["torch"], 2),
    )


def bench(config: str, batch: int, new_tokens: int, prompt_len: int, repeats: int) -> dict:
    """`floor_row` of a fresh `benchmarks.sampler_bench` row (no Tunix)."""
    from benchmarks import sampler_bench

    return floor_row(sampler_bench.bench(config, batch, new_tokens, prompt_len, repeats=3, tunix=False), repeats)


def table(rows: list[dict]) -> list[str]:
    lines = [
        (
            "| config | rows | upt_jax step ms (streams) | `generate` step ms | ratio | step ms for "
            f"{rows[0]['target']:g}× | XLA matmuls alone ms (head) | PyTorch matmuls alone ms (head) | "
            "ratio at XLA's | ratio at PyTorch's |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['batch']} | {r['upt_jax_step_ms']} ({r['upt_jax_streams']}) | {r['generate_step_ms']} | {r['ratio']}× | "
            f"{r['target_step_ms']} | {r['xla_ms']} ({r['xla_head_ms']}) | "
            f"{r['torch_ms']} ({r['torch_head_ms']}) | {r['ratio_at_xla_floor']}× | {r['ratio_at_torch_floor']}× |"
        )
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", nargs="+", default=["small"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args(argv)
    rows = [bench(c, a.batch, a.new_tokens, a.prompt_len, a.repeats) for c in a.config]
    print(f"host: {rows[0]['host']}\n")
    print("\n".join(table(rows)))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
