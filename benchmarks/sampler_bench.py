"""Sampler throughput: upt_jax vs transformers ``generate`` (PyTorch CPU) and Tunix, same batch.

    python -m benchmarks.sampler_bench --config tiny --batch 32 --new-tokens 64

    python -m benchmarks.sampler_bench --config tiny --top-k 50 --top-p 0.95 --no-tunix

All sample with temperature 1 (no top-k/top-p unless given), no stop token, from the same random Qwen2
weights and the same prompts: upt_jax, transformers and Tunix (``tunix.generate.Sampler`` on
``tunix.models.qwen2``, run by ``benchmarks/tunix_bench.py`` in ``.venv-tunix`` as a subprocess,
reading the weights with its own safetensors loader). New tokens per second is measured after a
warm-up call; compile times are reported separately. Without ``.venv-tunix``
(``make bench-tunix-env``) the Tunix column says "not run (make bench-tunix-env)".
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def bench(
    config: str,
    batch: int,
    new_tokens: int,
    prompt_len: int,
    repeats: int,
    tunix: bool = True,
    top_k: int = 0,
    top_p: float = 1.0,
) -> dict:
    import jax
    import torch

    from benchmarks.common import (
        TUNIX_SKIPPED,
        hf_qwen2,
        model_dict,
        ratio_stats,
        run_tunix_on,
        same_model_in_jax,
        set_torch_threads,
        tunix_fields,
    )
    from upt_jax.sampling import Sampler, SamplingParams

    set_torch_threads()
    hf = hf_qwen2(config)
    model = same_model_in_jax(hf)
    vocab = hf.config.vocab_size
    rng = np.random.RandomState(0)
    prompts = [rng.randint(1, vocab, prompt_len).tolist() for _ in range(batch)]

    # upt_jax (streams="auto", and one stream) and transformers, warmed up, then timed in turn
    # (repeat r times each of the three) so that all see the same load on a shared machine
    sampler = Sampler(model, pad_id=0, batch_bucket=8)
    one_stream = Sampler(model, pad_id=0, batch_bucket=8, streams=1)
    params = SamplingParams(max_new_tokens=new_tokens, temperature=1.0, top_k=top_k, top_p=top_p)
    first = sampler.generate(prompts, jax.random.key(0), params)
    one_stream.generate(prompts, jax.random.key(0), params)
    ids = torch.tensor(prompts)
    mask = torch.ones_like(ids)
    kw = dict(
        do_sample=True,
        temperature=1.0,
        top_k=top_k,
        top_p=top_p,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        pad_token_id=0,
        attention_mask=mask,
    )
    jax_times, one_times, pt_times = [], [], []
    with torch.no_grad():
        hf.generate(ids, **kw)  # warm-up
        for r in range(repeats):
            out = sampler.generate(prompts, jax.random.key(r + 1), params)
            jax_times.append(out.run_s)
            one_times.append(one_stream.generate(prompts, jax.random.key(r + 1), params).run_s)
            t0 = time.perf_counter()
            res = hf.generate(ids, **kw)
            pt_times.append(time.perf_counter() - t0)
    jax_tps = out.new_tokens() / min(jax_times)
    pt_new = (res.shape[1] - prompt_len) * batch
    # turn by turn: upt_jax's tokens/s over generate's (each side's seconds per token)
    paired_ratio, paired_iqr = ratio_stats([t / pt_new for t in pt_times], [t / out.new_tokens() for t in jax_times])
    one_tps = out.new_tokens() / min(one_times)
    pt_tps = pt_new / min(pt_times)

    # Tunix, in its own venv, on the same weights
    tx = (
        run_tunix_on(
            hf,
            dict(
                task="sampler",
                model=model_dict(model.cfg),
                batch=batch,
                new_tokens=new_tokens,
                prompt_len=prompt_len,
                repeats=repeats,
                prompts=prompts,
            ),
        )
        if tunix and top_k == 0 and top_p == 1.0
        else {"status": TUNIX_SKIPPED}
    )  # Tunix: no truncation
    return dict(
        config=config,
        batch=batch,
        new_tokens=new_tokens,
        prompt_len=prompt_len,
        top_k=top_k,
        top_p=top_p,
        device=str(jax.devices()[0].platform),
        upt_jax_tokens_per_s=round(jax_tps, 1),
        upt_jax_streams=sampler.streams,
        upt_jax_one_stream_tokens_per_s=round(one_tps, 1),
        upt_jax_compile_s=round(first.compile_s, 2),
        transformers_tokens_per_s=round(pt_tps, 1),
        ratio=round(jax_tps / pt_tps, 2),
        paired_ratio=paired_ratio,
        paired_iqr=paired_iqr,
        rounds=repeats,
        **tunix_fields(tx, jax_tps),
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", nargs="+", default=["tiny", "small"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--top-k", type=int, default=0, help="top-k truncation on both sides (0: off; Tunix skipped)")
    ap.add_argument("--top-p", type=float, default=1.0, help="top-p truncation on both sides (1: off; Tunix skipped)")
    ap.add_argument("--no-tunix", action="store_true", help="skip the Tunix column")
    ap.add_argument("--json", help="append results as JSON lines to this file")
    a = ap.parse_args(argv)
    from benchmarks.common import paired_cell, run_configs, tunix_cells

    rows = run_configs(
        a.config,
        lambda c: bench(
            c, a.batch, a.new_tokens, a.prompt_len, a.repeats, tunix=not a.no_tunix, top_k=a.top_k, top_p=a.top_p
        ),
        a.json,
    )
    print(
        "\n| config | batch × new | upt_jax tok/s | streams | 1 stream tok/s | transformers tok/s | ratio "
        "| paired ratio (IQR) | Tunix tok/s | upt_jax/Tunix | upt_jax compile s | Tunix compile s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t_tps, t_ratio = tunix_cells(r)
        print(
            f"| {r['config']} | {r['batch']} × {r['new_tokens']} | {r['upt_jax_tokens_per_s']} | "
            f"{r['upt_jax_streams']} | {r['upt_jax_one_stream_tokens_per_s']} | {r['transformers_tokens_per_s']} | {r['ratio']}× | {paired_cell(r)} | {t_tps} | {t_ratio} | {r['upt_jax_compile_s']} "
            f"| {r['tunix_compile_s'] if r['tunix_compile_s'] is not None else '–'} |"
        )
    return rows


if __name__ == "__main__":
    main()
