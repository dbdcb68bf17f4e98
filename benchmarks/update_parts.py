"""Where the update step's time goes, upt_jax against PyTorch, part by part.

    python -m benchmarks.update_parts --config tiny [--batch 8 --seq 256]

The same random Qwen2 weights and tokens on both sides (``benchmarks.common``), fp32, this
process's threads. Best of ``--repeats`` wall times after two warm-up calls, in ms:

* ``decoder forward``: the decoder's hidden states (no output head);
* ``decoder forward + backward``: the gradient of their sum w.r.t. every weight;
* ``+ head, log-probs``: the same with the output head and the token log-probs (what the update
  differentiates, without the loss and the optimiser);
* one layer's MLP (SwiGLU) and attention block (projections, RoPE, causal attention), forward
  and forward + backward, on ``[batch, seq, hidden]`` activations.

The backward alone is the difference of two rows. ``update_bench`` measures the whole step.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.update_bench import best_seconds


def _best(run, repeats: int) -> float:
    """Best wall time in ms, after two warm-up calls (the first compiles)."""
    return round(best_seconds(run, repeats, warmup=2) * 1e3, 2)


def torch_parts(hf, tokens: np.ndarray, x: np.ndarray, repeats: int) -> dict:
    """The PyTorch (transformers) side; ``hf`` is put in train mode."""
    import torch

    m = hf.train()
    tok = torch.from_numpy(tokens).long()
    am = torch.ones_like(tok)
    xt = torch.from_numpy(x).requires_grad_(True)
    layer = m.model.layers[0]
    pos = torch.arange(x.shape[1])[None].expand(x.shape[0], -1)
    rope = m.model.rotary_emb(xt, pos)

    def backward(y):
        m.zero_grad(set_to_none=True)
        y.sum().backward()

    def logprobs():
        logits = m(input_ids=tok, attention_mask=am).logits[:, :-1].float()
        return torch.log_softmax(logits, -1).gather(-1, tok[:, 1:, None])[..., 0]

    def attn():
        return layer.self_attn(xt, position_embeddings=rope, attention_mask=None)[0]

    with torch.no_grad():
        fwd = _best(lambda: m.model(input_ids=tok, attention_mask=am).last_hidden_state, repeats)
        mlp_f = _best(lambda: layer.mlp(xt), repeats)
        attn_f = _best(attn, repeats)
    return dict(
        decoder_fwd=fwd,
        decoder_fwd_bwd=_best(lambda: backward(m.model(input_ids=tok, attention_mask=am).last_hidden_state), repeats),
        logprobs_fwd_bwd=_best(lambda: backward(logprobs()), repeats),
        mlp_fwd=mlp_f,
        mlp_fwd_bwd=_best(lambda: backward(layer.mlp(xt)), repeats),
        attn_fwd=attn_f,
        attn_fwd_bwd=_best(lambda: backward(attn()), repeats),
    )


def jax_parts(model, tokens: np.ndarray, x: np.ndarray, repeats: int) -> dict:
    """The upt_jax side: the model's own modules, jitted."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from upt_jax.models import token_logprobs
    from upt_jax.models.rope import rope_tables

    graphdef, params = nnx.split(model)
    tok = jnp.asarray(tokens)
    am = jnp.ones_like(tok)
    xj = jnp.asarray(x)
    b, t = tokens.shape
    layer = model.layers[0]
    rope = rope_tables(jnp.broadcast_to(jnp.arange(t)[None], (b, t)), layer.self_attn.inv_freq)
    valid, slots = jnp.ones((b, t), bool), jnp.arange(t)

    def hidden(p):
        return nnx.merge(graphdef, p).hidden_states(tok, attention_mask=am)[0]

    def logprobs(p):
        mdl = nnx.merge(graphdef, p)
        h = mdl.hidden_states(tok, attention_mask=am)[0]
        return token_logprobs(h[:, :-1], mdl.lm_head_kernel(), tok[:, 1:]).sum()

    def part(module, call):
        gd, p = nnx.split(module)
        f = jax.jit(lambda p, x: call(nnx.merge(gd, p), x))
        g = jax.jit(jax.grad(lambda p, x: call(nnx.merge(gd, p), x).sum(), argnums=(0, 1)))
        return (
            _best(lambda: jax.block_until_ready(f(p, xj)), repeats),
            _best(lambda: jax.block_until_ready(g(p, xj)), repeats),
        )

    run = lambda f, *a: _best(lambda: jax.block_until_ready(f(*a)), repeats)
    mlp_f, mlp_fb = part(layer.mlp, lambda m, x: m(x))
    attn_f, attn_fb = part(layer.self_attn, lambda m, x: m(x, rope, valid, slots, slots)[0])
    return dict(
        decoder_fwd=run(jax.jit(hidden), params),
        decoder_fwd_bwd=run(jax.jit(jax.grad(lambda p: hidden(p).sum())), params),
        logprobs_fwd_bwd=run(jax.jit(jax.grad(logprobs)), params),
        mlp_fwd=mlp_f,
        mlp_fwd_bwd=mlp_fb,
        attn_fwd=attn_f,
        attn_fwd_bwd=attn_fb,
    )


ROWS = [
    ("decoder_fwd", "decoder forward"),
    ("decoder_fwd_bwd", "decoder forward + backward"),
    ("logprobs_fwd_bwd", "+ head, log-probs: forward + backward"),
    ("mlp_fwd", "one layer's MLP: forward"),
    ("mlp_fwd_bwd", "one layer's MLP: forward + backward"),
    ("attn_fwd", "one layer's attention block: forward"),
    ("attn_fwd_bwd", "one layer's attention block: forward + backward"),
]


def bench(config: str, batch: int, seq: int, repeats: int) -> dict:
    from benchmarks.common import hf_qwen2, same_model_in_jax, set_torch_threads
    from upt_jax.hostinfo import host

    set_torch_threads()
    hf = hf_qwen2(config)
    model = same_model_in_jax(hf)
    rng = np.random.RandomState(0)
    tokens = rng.randint(1, model.cfg.vocab_size, (batch, seq)).astype(np.int32)
    x = rng.randn(batch, seq, model.cfg.hidden_size).astype(np.float32)
    up = jax_parts(model, tokens, x, repeats)
    pt = torch_parts(hf, tokens, x, repeats)
    return dict(host=host(), config=config, batch=batch, seq=seq, upt_jax_ms=up, torch_ms=pt)


def table(r: dict) -> list[str]:
    lines = [
        f"{r['config']}, {r['batch']} × {r['seq']} tokens; host: {r['host']}",
        "",
        "| part | upt_jax ms | PyTorch ms | PyTorch / upt_jax |",
        "|---|---|---|---|",
    ]
    for key, name in ROWS:
        u, p = r["upt_jax_ms"][key], r["torch_ms"][key]
        lines.append(f"| {name} | {u} | {p} | {p / u:.2f}× |")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args(argv)
    r = bench(a.config, a.batch, a.seq, a.repeats)
    print("\n".join(table(r)))
    return r


if __name__ == "__main__":
    main()
