"""Update-step throughput and MFU: upt_jax vs PyTorch (transformers Qwen2 + GRPO loss + AdamW) and Tunix.

    python -m benchmarks.update_bench --config tiny small --batch 8 --seq 256

Both run the same random Qwen2 weights on the same batch: forward, token log-probs of the
response, GRPO's clipped surrogate with group-normalised advantages (seq-mean-token-mean),
backward, global-norm clipping and an AdamW step. Tokens/s counts every position of the batch.
MFU = model FLOPs per second / the fp32 matmul peak measured in the same run (a large
jitted matmul), with model FLOPs = 6·N_matmul·tokens + 12·L·H·Dh·T·tokens (attention, fwd+bwd).
Compile time is reported apart from step time. upt_jax's and PyTorch's steps are timed in turns
(``--steps`` rounds of one step each, which side goes first alternating), so that both see the same
load on a shared host: tok/s, MFU and ``ratio`` come from each side's fastest step, and
``paired_ratio`` is the median of PyTorch's time over upt_jax's round by round, with its
interquartile range (``paired_iqr``): the spread says how far one run's ratio can be trusted.
upt_jax runs with its default
``train.logprob_remat="auto"``: the batch's ``[B, T, V]`` logits (262 MB for small) are under the
1 GiB budget, so they are kept rather than recomputed in chunks (``--logits-remat always`` measures
the chunked path).

Tunix (run by ``benchmarks/tunix_bench.py`` in ``.venv-tunix``, a subprocess; without it the
column says "not run (make bench-tunix-env)") runs the same batch, split into prompt (the first
``seq // 4`` positions) and completion, through the update step its ``GRPOLearner`` runs:
``tunix.rl.trainer.Trainer``'s jitted train step with ``algo_core.grpo_loss_fn`` (ε = 0.2, β = 0,
sequence-mean-token-mean) and the same clip-by-global-norm + AdamW, on ``tunix.models.qwen2``
with the same weights (read by Tunix's safetensors loader). Tunix's loss also computes the
per-token entropy of the logits (a logged metric), which upt_jax and PyTorch do not. Each
side's first-step loss is in the JSON (``first_loss``): all three are GRPO's clipped objective
``−min(ρÂ, clip(ρ)Â)`` on the same weights and batch (upt_jax's logged ``loss`` is the method's
objective; the UPGE surrogate it differentiates, same gradient, other value, is
``first_loss.upt_jax_surrogate``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

G = 4  # rollouts per question in the benchmark batch


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Measured fp32 matmul throughput of this machine (GFLOP/s), XLA."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    return _peak(lambda: f(a, a).block_until_ready(), n, repeats)


def torch_matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    """The same for PyTorch in this process's environment: with `matmul_peak_gflops`, what shows
    that an ISA restriction reached both sides' matmul libraries (``rl_step_bench --isa avx2``)."""
    import torch

    a = torch.ones(n, n)
    return _peak(lambda: a @ a, n, repeats)


def best_seconds(run, repeats: int, warmup: int = 1) -> float:
    """The fastest of ``repeats`` wall times of ``run()``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def _peak(run, n: int, repeats: int) -> float:
    """GFLOP/s of an ``n × n`` matmul ``run()``, best of ``repeats`` after one warm-up call."""
    return 2 * n**3 / best_seconds(run, repeats) / 1e9


def train_flops_per_token(cfg, seq: int) -> float:
    d, f, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    q, kv = cfg.num_heads * hd, cfg.num_kv_heads * hd
    per_layer = d * q + 2 * d * kv + q * d + 3 * d * f
    n_matmul = cfg.num_layers * per_layer + d * cfg.vocab_size  # lm head; embedding lookup is free
    attn = 12 * cfg.num_layers * q * seq  # QK^T and PV, forward + backward (no causal discount)
    return 6 * n_matmul + attn


def make_batch(vocab: int, batch: int, seq: int, seed: int = 0):
    rng = np.random.RandomState(seed)
    prompt = seq // 4
    tokens = rng.randint(1, vocab, (batch, seq)).astype(np.int32)
    attn = np.ones((batch, seq), np.int32)
    mask = np.zeros((batch, seq), np.float32)
    for i in range(batch):
        mask[i, prompt : prompt + rng.randint(seq // 2, seq - prompt + 1)] = 1
    rewards = rng.randint(0, 2, batch).astype(np.float32)
    old_logp = (-2.0 + 0.1 * rng.randn(batch, seq)).astype(np.float32) * mask
    return dict(tokens=tokens, attention_mask=attn, mask=mask, rewards=rewards, old_logp=old_logp)


def compiled_update(model, batch_np, *, chunk: int = 128, logits_remat: str = "auto"):
    """The benchmarked GRPO update (the trainer's `make_train_step` with AdamW, clipping at 1) for
    ``model`` on ``batch_np`` (`make_batch`), compiled: ``(compiled step, state, batch, compile s)``."""
    import jax.numpy as jnp

    from upt_jax import upge
    from upt_jax.train import create_train_state, make_optimizer, make_train_step, upge_objective

    tx = make_optimizer(1e-5, max_grad_norm=1.0)
    graphdef, state, _ = create_train_state(model, tx)
    step = make_train_step(
        graphdef, tx, upge_objective(upge.get_recipe("grpo"), group_size=G, chunk_size=chunk, logits_remat=logits_remat)
    )
    batch = {k: jnp.asarray(v) for k, v in batch_np.items()}
    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    return compiled, state, batch, time.perf_counter() - t0


def jax_step_timer(
    cfg,
    batch_np,
    remat: str = "none",
    chunk: int = 128,
    info: dict | None = None,
    model=None,
    logits_remat: str = "auto",
):
    """upt_jax's update step, compiled and run once: ``(run, compile_s, temp_bytes)``, where ``run()``
    takes one more step and returns its wall seconds."""
    import jax

    from upt_jax.models import init_model

    model = model if model is not None else init_model(cfg, 0, remat=remat)
    compiled, state, batch, compile_s = compiled_update(model, batch_np, chunk=chunk, logits_remat=logits_remat)
    state, m = compiled(state, batch)
    jax.block_until_ready(state)
    if info is not None:  # the loss of the first step (the same weights and batch on every side)
        info["first_loss"] = float(m["loss"])
        info["first_surrogate"] = float(m["surrogate"])
    box = [state]

    def run() -> float:
        t0 = time.perf_counter()
        box[0], _ = compiled(box[0], batch)
        jax.block_until_ready(box[0])
        return time.perf_counter() - t0

    mem = compiled.memory_analysis()
    return run, compile_s, getattr(mem, "temp_size_in_bytes", 0)


def bench_jax(cfg, batch_np, steps: int, remat: str = "none", chunk: int = 128, **kw):
    """upt_jax alone: ``(fastest of steps s, compile_s, temp_bytes)`` (`jax_step_timer`'s keywords)."""
    run, compile_s, temp = jax_step_timer(cfg, batch_np, remat, chunk, **kw)
    return min(run() for _ in range(steps)), compile_s, temp


def torch_step_timer(hf_model, batch_np, info: dict | None = None):
    """The same step in PyTorch (transformers, trained in place), run once: ``run()`` takes one more
    step and returns its wall seconds."""
    import torch

    model = hf_model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
    b = {k: torch.from_numpy(v) for k, v in batch_np.items()}
    tokens, mask = b["tokens"].long(), b["mask"]
    r = b["rewards"].view(-1, G)
    adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, unbiased=False, keepdim=True) + 1e-6)).view(-1, 1)

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=tokens, attention_mask=b["attention_mask"].long()).logits[:, :-1].float()
        logp = torch.log_softmax(logits, -1).gather(-1, tokens[:, 1:, None])[..., 0]
        m = mask[:, 1:]
        ratio = torch.exp(logp - b["old_logp"][:, 1:])
        pg = -torch.minimum(ratio * adv, torch.clamp(ratio, 0.8, 1.2) * adv)
        loss = ((pg * m).sum(1) / m.sum(1).clamp(min=1)).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return float(loss.detach())

    first = step()  # warm-up
    if info is not None:
        info["first_loss"] = first

    def run() -> float:
        t0 = time.perf_counter()
        step()
        return time.perf_counter() - t0

    return run


def bench(
    config: str, batch: int, seq: int, steps: int, remat: str, tunix: bool = True, logits_remat: str = "auto"
) -> dict:
    """upt_jax's and PyTorch's steps timed in turns (``steps`` rounds, `benchmarks.common.in_turns`),
    Tunix's in its own process before them. tokens/s and MFU from each side's fastest step; ``ratio``
    = PyTorch's fastest over upt_jax's; ``paired_ratio`` and ``paired_iqr``: the median and the
    interquartile range of PyTorch's time over upt_jax's round by round."""
    import jax

    from benchmarks.common import (
        TUNIX_SKIPPED,
        hf_qwen2,
        in_turns,
        model_dict,
        ratio_stats,
        run_tunix_on,
        same_model_in_jax,
        set_torch_threads,
        tunix_fields,
    )

    set_torch_threads()
    hf = hf_qwen2(config)
    model = same_model_in_jax(hf, remat=remat)
    cfg = model.cfg
    batch_np = make_batch(cfg.vocab_size, batch, seq)
    peak = matmul_peak_gflops()
    jax_info = {}
    jax_run, compile_s, temp_bytes = jax_step_timer(
        cfg, batch_np, remat, info=jax_info, model=model, logits_remat=logits_remat
    )
    if tunix:  # before PyTorch's steps, which train the transformers model in place
        tunix_batch = {k: v.tolist() for k, v in batch_np.items()}
        tunix_batch["prompt_len"] = seq // 4  # make_batch's prompt: the response mask starts there
        tx = run_tunix_on(hf, dict(task="update", model=model_dict(cfg), batch=tunix_batch, group=G, steps=steps))
    else:
        tx = {"status": TUNIX_SKIPPED}
    torch_info = {}
    torch_run = torch_step_timer(hf, batch_np, info=torch_info)
    torch_times, jax_times = in_turns(torch_run, jax_run, rounds=steps, warmup=1)
    paired_ratio, paired_iqr = ratio_stats(torch_times, jax_times)
    jax_s, torch_s = min(jax_times), min(torch_times)
    tokens = batch * seq
    flops = train_flops_per_token(cfg, seq) * tokens
    tunix_s = tokens / tx["tokens_per_s"] if tx.get("status") == "ok" else None
    return dict(
        config=config,
        batch=batch,
        seq=seq,
        device=str(jax.devices()[0].platform),
        upt_jax_tokens_per_s=round(tokens / jax_s, 1),
        torch_tokens_per_s=round(tokens / torch_s, 1),
        ratio=round(torch_s / jax_s, 2),
        paired_ratio=paired_ratio,
        paired_iqr=paired_iqr,
        rounds=steps,
        upt_jax_mfu=round(flops / jax_s / 1e9 / peak, 3),
        torch_mfu=round(flops / torch_s / 1e9 / peak, 3),
        matmul_peak_gflops=round(peak, 1),
        upt_jax_compile_s=round(compile_s, 2),
        upt_jax_temp_mb=round(temp_bytes / 1e6, 1),
        remat=remat,
        logits_remat=logits_remat,
        **tunix_fields(tx, tokens / jax_s),
        tunix_mfu=round(flops / tunix_s / 1e9 / peak, 3) if tunix_s else None,
        first_loss=dict(
            upt_jax=jax_info.get("first_loss"),
            torch=torch_info.get("first_loss"),
            tunix=tx.get("first_loss"),
            upt_jax_surrogate=jax_info.get("first_surrogate"),
        ),
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", nargs="+", default=["tiny", "small"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=8, help="rounds: one step of each side per round, in turns")
    ap.add_argument("--remat", default="none")
    ap.add_argument(
        "--logits-remat",
        default="auto",
        choices=["auto", "always", "never"],
        help="upt_jax's train.logprob_remat (auto: keep the logits below 1 GiB)",
    )
    ap.add_argument("--no-tunix", action="store_true", help="skip the Tunix column")
    ap.add_argument("--json", help="append results as JSON lines to this file")
    a = ap.parse_args(argv)
    from benchmarks.common import paired_cell, run_configs, tunix_cells

    rows = run_configs(
        a.config,
        lambda c: bench(c, a.batch, a.seq, a.steps, a.remat, tunix=not a.no_tunix, logits_remat=a.logits_remat),
        a.json,
    )
    print(
        "\n| config | batch × seq | upt_jax tok/s | PyTorch tok/s | ratio | paired ratio (IQR) | Tunix tok/s | "
        "upt_jax/Tunix | upt_jax MFU | PyTorch MFU | Tunix MFU | matmul peak GFLOP/s | compile s | Tunix compile s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t_tps, t_ratio = tunix_cells(r)
        t_mfu = f"{r['tunix_mfu']:.1%}" if r["tunix_mfu"] is not None else "–"
        print(
            f"| {r['config']} | {r['batch']} × {r['seq']} | {r['upt_jax_tokens_per_s']} | "
            f"{r['torch_tokens_per_s']} | {r['ratio']}× | {paired_cell(r)} | {t_tps} | {t_ratio} | {r['upt_jax_mfu']:.1%} | "
            f"{r['torch_mfu']:.1%} | {t_mfu} | {r['matmul_peak_gflops']} | {r['upt_jax_compile_s']} | "
            f"{r['tunix_compile_s'] if r['tunix_compile_s'] is not None else '–'} |"
        )
    return rows


if __name__ == "__main__":
    main()
