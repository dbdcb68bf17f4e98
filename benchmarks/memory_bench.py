"""Peak temporary memory of the log-prob/entropy pass: chunked (rematerialised) vs naive.

    python -m benchmarks.memory_bench [--vocab 151936 --hidden 896 --batch 4 --seq 2048]

The issue's target: for a 150k-vocabulary model, the log-prob + entropy pass (forward and
backward, what the update step compiles) holds at most a quarter of the naive peak, which
materialises ``[B, T, V]`` fp32 logits. Measured with XLA's compiled memory analysis
(``temp_size_in_bytes``) of ``jax.grad`` through ``token_logprobs``: nothing is allocated, so a
5 GB naive graph is measured on any machine. The defaults are Qwen2-0.5B's head
(hidden 896, vocabulary 151936) on 4 × 2048 tokens.
"""

from __future__ import annotations

import argparse


def temp_bytes(remat: str, b: int, t: int, d: int, v: int, chunk: int = 128) -> int:
    """Compiled temporary bytes of value-and-grad of ``Σ logp + Σ entropy`` w.r.t. (h, W)."""
    import jax
    import jax.numpy as jnp

    from upt_jax.models.logprobs import naive_token_logprobs, token_logprobs

    def f(h, w, tg):
        if remat == "naive":
            lp, ent = naive_token_logprobs(h, w, tg, return_entropy=True)
        else:
            lp, ent = token_logprobs(h, w, tg, chunk_size=chunk, return_entropy=True, remat=remat)
        return jnp.sum(lp) + 0.1 * jnp.sum(ent)

    args = (
        jax.ShapeDtypeStruct((b, t, d), jnp.float32),
        jax.ShapeDtypeStruct((d, v), jnp.float32),
        jax.ShapeDtypeStruct((b, t), jnp.int32),
    )
    compiled = jax.jit(jax.value_and_grad(f, argnums=(0, 1))).lower(*args).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def bench(vocab: int = 151936, hidden: int = 896, batch: int = 4, seq: int = 2048, chunk: int = 128) -> dict:
    naive = temp_bytes("naive", batch, seq, hidden, vocab, chunk)
    chunked = temp_bytes("always", batch, seq, hidden, vocab, chunk)
    auto = temp_bytes("auto", batch, seq, hidden, vocab, chunk)
    return dict(
        vocab=vocab,
        hidden=hidden,
        batch=batch,
        seq=seq,
        chunk=chunk,
        logits_mb=round(batch * seq * vocab * 4 / 1e6, 1),
        naive_mb=round(naive / 1e6, 1),
        chunked_mb=round(chunked / 1e6, 1),
        auto_mb=round(auto / 1e6, 1),
        chunked_over_naive=round(chunked / naive, 4),
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--hidden", type=int, default=896)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--chunk", type=int, default=128)
    a = ap.parse_args(argv)
    r = bench(a.vocab, a.hidden, a.batch, a.seq, a.chunk)
    print(r)
    return r


if __name__ == "__main__":
    main()
