"""Run every benchmark and write BENCHMARKS.md (and benchmarks/results/*.json, scaling.png).

    python -m benchmarks.run_all                 # tiny + small, CPU here; GPU/TPU where run
    python -m benchmarks.run_all --quick         # tiny only, fewer repeats (a smoke run)
    python -m benchmarks.run_all --hpt-only      # only the HPT step section, printed (no files written)

Sections: sampler new tokens/s vs transformers ``generate`` and Tunix; update-step tokens/s
and MFU vs PyTorch and Tunix (Tunix runs in its own venv, ``make bench-tunix-env``; without it
its columns say "not run"); one full HPT step split into rollout / reward / update with compile times apart,
and its rollout + reward with scoring overlapped in C = 1, 2, 4 chunks (``benchmarks/overlap_bench.py``);
and that step's update on padded rows vs packed rows (``train.pack_sequences``) on the same batch;
peak memory; a scaling plot of update and rollout time against sequence length, group
size and batch size; the time to a tiny HF model's first GRPO step and the recompiles of a run
(``benchmarks/first_step.py``); and one whole GRPO step against TRL's ``GRPOTrainer`` (its own venv,
``make bench-trl-env``), with the HPT step beside it, on the native ISA and on AVX2
(``benchmarks/rl_step_bench.py``). Every comparison is measured side by side in the same run.
Sections measured by their own commands are rendered from their results (``benchmarks/own_runs.py``:
the LoRA/QLoRA memory table from ``python -m benchmarks.lora_memory``); earlier sessions' analyses
live in docs/performance.md, so a regeneration loses nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def hpt_step_split(steps: int = 5) -> dict:
    """Run a few HPT steps of the tiny synthetic config and split their time (the trainer's metrics).

    A step whose rows land in a new length bucket compiles (the update, the reference pass, the
    sampler) inside its timings; the split is the mean over the steps after the first that compiled
    nothing (the trainer's ``compile/count``), so compile time and run time stay apart.
    """
    from benchmarks.common import hpt_bench_config
    from upt_jax.train import Trainer

    trainer = Trainer(hpt_bench_config("upt_bench_hpt_", steps=steps))
    history = []
    try:  # the trainer's compile/* metrics: XLA compiles, persistent-cache hits apart
        for _ in range(steps):
            m = trainer.train_step()
            history.append(dict(m, compile_s=m["compile/seconds"], compiled=m["compile/count"] > 0))
    finally:
        trainer.close()
    warm = [m for m in history[1:] if not m["compiled"]] or history[1:] or history
    mean = lambda k: float(np.mean([m.get(k, 0.0) for m in warm]))
    return dict(
        steps=steps,
        warm_steps=len(warm),
        rows_per_step=8 * 9,
        rollout_s=round(mean("time/rollout_s"), 3),
        reward_s=round(mean("time/reward_s"), 4),
        update_s=round(mean("time/update_s"), 3),
        step_s=round(mean("time/step_s"), 3),
        first_step_s=round(history[0]["time/step_s"], 2),
        compile_steps=sum(m["compiled"] for m in history),
        compile_s=round(sum(m["compile_s"] for m in history), 2),
        rollout_compile_s=round(history[0].get("time/rollout_compile_s", 0.0), 2),
    )


def hpt_update_packed_vs_padded(repeats: int = 3, experiment: str = "hpt") -> dict:
    """One batch of the HPT config above (8 questions × (8 rollouts + 1 demo)), updated on padded rows
    and on packed rows (``train.pack_sequences``): each compiled first (``*_first_s``), then timed
    ``repeats`` times, the two layouts in turn (best of each): the same batch, so the update times
    compare directly. Also the share of the model's token slots that is padding in each layout, and
    the host time of packing. ``experiment``: another ``experiments`` module (e.g. ``grpo``)."""
    import jax

    from benchmarks.common import hpt_bench_config
    from upt_jax.train.trainer import Trainer

    c = hpt_bench_config("upt_bench_hpt_pack_", experiment=experiment)
    t = Trainer(c)
    try:
        rows, _, _ = t.batch(next(t.data_iter), jax.random.key(0))
        rows.pop("truncated")
        t0 = time.perf_counter()
        packed, info = t.pack(rows)
        pack_s = time.perf_counter() - t0
        out = dict(
            rows=int(rows["tokens"].shape[0]),
            row_len=int(rows["tokens"].shape[1]),
            packed_rows=int(info["pack/rows"]),
            packed_len=int(info["pack/len"]),
            padding_frac=round(info["pack/padding_frac_unpacked"], 3),
            packed_padding_frac=round(info["pack/padding_frac"], 3),
            pack_host_s=round(pack_s, 4),
        )
        batches, times = {}, {"padded": [], "packed": []}
        for name, r in (("padded", rows), ("packed", packed)):
            batches[name] = t.frozen_inputs(t.place(r), jax.random.key(0)).policy  # the reference's log-probs
        for i in range(repeats + 1):
            for name, batch in batches.items():
                t0 = time.perf_counter()
                t.state, m = t.step_fn(t.state, batch)
                jax.block_until_ready(m)
                times[name].append(time.perf_counter() - t0)
        for name, ts in times.items():
            out[f"{name}_first_s"] = round(ts[0], 2)
            out[f"{name}_update_s"] = round(min(ts[1:]), 3)
        out["speedup"] = round(out["padded_update_s"] / out["packed_update_s"], 2)
        return out
    finally:
        t.close()


def hpt_lines(hpt: dict, pack: dict) -> list[str]:
    """The HPT section of BENCHMARKS.md."""
    return [
        "## One HPT step (tiny model, 8 questions × (8 rollouts + 1 demo), 64 new tokens)",
        "",
        f"{hpt['steps']} steps; rollout / reward / update / step are the mean of the "
        f"{hpt['warm_steps']} steps after the first that compiled nothing (a step whose rows land in a new "
        f"length bucket compiles its update: {hpt['compile_steps']} steps compiled, {hpt['compile_s']} s in all; "
        "the update's time also grows with the bucket's length).",
        "",
        "| rollout s | reward s | update s | step s | first step s (compiles) | rollout compile s |",
        "|---|---|---|---|---|---|",
        f"| {hpt['rollout_s']} | {hpt['reward_s']} | {hpt['update_s']} | {hpt['step_s']} | "
        f"{hpt['first_step_s']} | {hpt['rollout_compile_s']} |",
        "",
        "The update of one such batch on padded rows (each sequence in its own row, prompt and response "
        "lengths bucketed) and on packed rows (`train.pack_sequences=True`: sequences first-fit-decreasing "
        "into rows of a bucketed length, each attending to itself only; same loss and gradient), the same "
        "batch, compiled first, then best of 3 taken in turn:",
        "",
        "| layout | rows × length | padding share | update s | first call s (compiles) |",
        "|---|---|---|---|---|",
        f"| padded | {pack['rows']} × {pack['row_len']} | {pack['padding_frac']:.1%} | {pack['padded_update_s']} | "
        f"{pack['padded_first_s']} |",
        f"| packed | {pack['packed_rows']} × {pack['packed_len']} | {pack['packed_padding_frac']:.1%} | "
        f"{pack['packed_update_s']} | {pack['packed_first_s']} |",
        "",
        f"Packing: {pack['speedup']}× faster update; packing on the host took {pack['pack_host_s']} s.",
        "",
    ]


def scaling(out_png: str, quick: bool) -> dict:
    """Update and rollout time against sequence length, group size n and batch size (tiny config)."""
    import jax
    import jax.numpy as jnp

    from benchmarks.update_bench import G, bench_jax, make_batch
    from upt_jax.models import init_model, preset
    from upt_jax.sampling import Sampler, SamplingParams

    cfg = preset("tiny")
    res = {"seq": [], "n": [], "batch": []}
    seqs = (64, 128, 256) if quick else (64, 128, 256, 512)
    for t in seqs:
        s, _, _ = bench_jax(cfg, make_batch(cfg.vocab_size, 8, t), 2)
        sampler = Sampler(init_model(cfg, 0))
        p = SamplingParams(max_new_tokens=t)
        prompts = [[1] * 16 for _ in range(8)]
        sampler.generate(prompts, jax.random.key(0), p)
        r = sampler.generate(prompts, jax.random.key(1), p).run_s
        res["seq"].append((t, s, r))
    for n in (2, 4, 8) if quick else (2, 4, 8, 16):
        sampler = Sampler(init_model(cfg, 0))
        p = SamplingParams(max_new_tokens=64, n=n)
        prompts = [[1] * 16 for _ in range(4)]
        sampler.generate(prompts, jax.random.key(0), p)
        r = sampler.generate(prompts, jax.random.key(1), p).run_s
        s, _, _ = bench_jax(cfg, make_batch(cfg.vocab_size, 4 * n, 128), 2)
        res["n"].append((n, s, r))
    for b in (4, 8, 16) if quick else (4, 8, 16, 32):
        s, _, _ = bench_jax(cfg, make_batch(cfg.vocab_size, b, 128), 2)
        sampler = Sampler(init_model(cfg, 0))
        p = SamplingParams(max_new_tokens=64)
        prompts = [[1] * 16 for _ in range(b)]
        sampler.generate(prompts, jax.random.key(0), p)
        r = sampler.generate(prompts, jax.random.key(1), p).run_s
        res["batch"].append((b, s, r))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    labels = {
        "seq": "sequence length (update) / new tokens (rollout)",
        "n": "group size n (4 questions)",
        "batch": "batch size (rows)",
    }
    for ax, (k, rows) in zip(axes, res.items()):
        x = [r[0] for r in rows]
        ax.plot(x, [r[1] for r in rows], "o-", label="update step")
        ax.plot(x, [r[2] for r in rows], "s--", label="rollout")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(labels[k])
        ax.set_ylabel("seconds")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"upt_jax tiny config on {jax.devices()[0].platform} (update: batch 8 unless varied)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    return res


def machine() -> str:
    """The host line: device, CPU model, cores, ISA flags (`upt_jax.hostinfo.host`)."""
    from upt_jax.hostinfo import host

    return host()


def startup_and_rl_step_lines(first: dict, rl_rows: list[dict]) -> list[str]:
    """The time-to-first-step and whole-RL-step sections of BENCHMARKS.md."""
    from benchmarks import first_step, rl_step_bench

    return [
        "## Time to the first GRPO step, and recompiles (tiny HF Qwen2)",
        "",
        "`python -m benchmarks.first_step`: a tiny random HF Qwen2 (2 layers, hidden 32) with its own BPE "
        "tokenizer, `experiments/grpo.py` on every training tier (8 questions × 8 rollouts of ≤ 64 tokens), "
        f"{first['steps']} steps, each run a fresh process. `before`: no persistent cache and each step's own "
        "length buckets (the code before `upt_jax.train.shapes` and `compile_cache`); `off`: one bucket per "
        "run, no cache; `cold` / `warm`: the persistent cache empty / filled by the cold run.",
        "",
        *first_step.table(first),
        "",
        "## One whole RL step: upt_jax vs TRL `GRPOTrainer` (GRPO), and HPT",
        "",
        "`python -m benchmarks.rl_step_bench`: 4 prompts × 8 rollouts of exactly 64 new tokens at T = 1, a "
        "reward each, one clipped GRPO update with AdamW on the 32 × 96 rows; the same random Qwen2 weights, "
        "prompts and reward on both sides; upt_jax through a `Trainer` built from `experiments/grpo.py`, TRL "
        "(`.venv-trl`) through `GRPOTrainer.train`, steps taken in turn; the HPT step (4 × (8 rollouts + 1 "
        "demonstration)) beside it. Median of the rounds after two warm-up steps; `avx2`: both sides restricted "
        "to AVX2, their matmul libraries included (`rl_step_bench.ISA_ENV`: XLA `--xla_cpu_max_isa=AVX2` with "
        "its dots through oneDNN under `ONEDNN_MAX_CPU_ISA=AVX2`; PyTorch `ATEN_CPU_CAPABILITY=avx2`, "
        "`MKL_ENABLE_INSTRUCTIONS=AVX2`); each side's matmul peak under it is a column.",
        "",
        *rl_step_bench.table(rl_rows),
        "",
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    ap.add_argument("--no-tunix", action="store_true", help="skip the Tunix columns")
    ap.add_argument("--no-trl", action="store_true", help="skip TRL's side of the whole-RL-step table")
    ap.add_argument(
        "--hpt-only",
        action="store_true",
        help="only the HPT step section (padded vs packed update), printed; no files written",
    )
    a = ap.parse_args(argv)
    if a.hpt_only:
        res = dict(machine=machine(), hpt_step=hpt_step_split(), hpt_update_packed=hpt_update_packed_vs_padded())
        print(json.dumps(res, indent=2))
        print("\n".join(hpt_lines(res["hpt_step"], res["hpt_update_packed"])))
        return res
    from benchmarks import decode_floor, memory_bench, overlap_bench, own_runs, sampler_bench, update_bench
    from benchmarks.common import paired_cell, tunix_cells

    configs = ["tiny"] if a.quick else ["tiny", "small"]
    results_dir = os.path.join(HERE, "results")
    os.makedirs(results_dir, exist_ok=True)
    t0 = time.time()
    tunix = not a.no_tunix
    samp = [sampler_bench.bench(c, 32, 64, 16, 2 if a.quick else 5, tunix=tunix) for c in configs]
    floor = [decode_floor.floor_row(r, 5 if a.quick else 20) for r in samp]
    upd = [update_bench.bench(c, 8, 256, 3 if a.quick else 8, "none", tunix=tunix) for c in configs]
    mem = memory_bench.bench()
    hpt = hpt_step_split()
    hpt_pack = hpt_update_packed_vs_padded()
    overlap = overlap_bench.bench((1, 2, 4), 2 if a.quick else 3)
    from benchmarks import first_step, rl_step_bench

    first = first_step.bench(10 if a.quick else 40)
    rl_rows = [
        r
        for isa in (["native"] if a.quick else ["native", "avx2"])
        for r in rl_step_bench.run_isa(isa, configs, 2 if a.quick else 3, not a.no_trl)
    ]
    png = os.path.join(results_dir, "scaling.png")
    scale = scaling(png, a.quick)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    all_results = dict(
        machine=machine(),
        sampler=samp,
        decode_floor=floor,
        update=upd,
        logprob_memory=mem,
        hpt_step=hpt,
        hpt_update_packed=hpt_pack,
        overlap=overlap,
        scaling=scale,
        first_step=first,
        rl_step=rl_rows,
        peak_rss_mb=round(peak_rss_mb, 1),
        seconds=round(time.time() - t0, 1),
    )
    with open(os.path.join(results_dir, "latest.json"), "w") as f:
        json.dump(all_results, f, indent=2)

    lines = [
        "# Benchmarks",
        "",
        f"Generated by `python -m benchmarks.run_all{' --quick' if a.quick else ''}` on "
        f"{all_results['machine']}. Every ratio is measured side by side in the same run; the "
        "machines here are shared, so absolute CPU numbers are indicative only.",
        "",
        "## Sampler: new tokens/s vs transformers `generate` (PyTorch CPU) and Tunix, batch 32 × 64 new tokens",
        "",
        'upt_jax samples with `streams="auto"` (row chunks decoded concurrently in threads, same '
        "tokens; the streams column); its one-stream tokens/s is measured in the same turns. tok/s and "
        "ratio come from each side's fastest call; the paired ratio is the median of upt_jax's tokens/s "
        "over `generate`'s turn by turn, with its interquartile range.",
        "",
        "| config | upt_jax tok/s | streams | 1 stream tok/s | transformers tok/s | ratio | paired ratio (IQR), "
        "rounds | Tunix tok/s | upt_jax/Tunix | upt_jax compile s | Tunix compile s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    dash = lambda v, f="{}": "–" if v is None else f.format(v)
    for r in samp:
        t_tps, t_ratio = tunix_cells(r)
        lines.append(
            f"| {r['config']} | {r['upt_jax_tokens_per_s']} | {r['upt_jax_streams']} | "
            f"{r['upt_jax_one_stream_tokens_per_s']} | {r['transformers_tokens_per_s']} | {r['ratio']}× | "
            f"{paired_cell(r)}, {r.get('rounds', '–')} | {t_tps} | {t_ratio} | {r['upt_jax_compile_s']} | "
            f"{dash(r['tunix_compile_s'])} |"
        )
    lines += [
        "",
        "### The sampler's step against its matmuls alone (`python -m benchmarks.decode_floor`)",
        "",
        "One decode step's matmuls (per layer q, k, v, o, gate, up, down, then the head) with their own "
        "weights, the model's dependencies between them and nothing else, in XLA (one jitted program) "
        "and in PyTorch (eager), best of repeats. The step times are the sampler rows above (batch / "
        f"tokens/s); a sampler at {decode_floor.TARGET:g}× `generate` needs the step time in that "
        "column; the last two columns are the ratio a step costing just those matmuls would reach "
        "(a reference, not a bound: the rest of the step is left out, and a sampler can beat one "
        "serial chain of matmuls with concurrent row chunks and cached weights, as tiny's does).",
        "",
        *decode_floor.table(floor),
    ]
    lines += [
        "",
        "## Update step (GRPO loss + AdamW): tokens/s and MFU vs PyTorch and Tunix, batch 8 × 256",
        "",
        "MFU = model FLOPs/s ÷ the fp32 matmul peak measured in the same run. upt_jax's and PyTorch's "
        "steps are timed in turns, one of each per round (which goes first alternating), so both see the "
        "same load: tok/s, MFU and ratio come from each side's fastest step; the paired ratio is the median "
        "of PyTorch's time over upt_jax's round by round, with its interquartile range. Tunix runs in its own "
        "process before them.",
        "",
        "| config | upt_jax tok/s | PyTorch tok/s | ratio | paired ratio (IQR), rounds | Tunix tok/s | upt_jax/Tunix "
        "| upt_jax MFU | PyTorch MFU | Tunix MFU | matmul peak GFLOP/s | compile s | Tunix compile s | XLA temp MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in upd:
        t_tps, t_ratio = tunix_cells(r)
        lines.append(
            f"| {r['config']} | {r['upt_jax_tokens_per_s']} | {r['torch_tokens_per_s']} | {r['ratio']}× | "
            f"{paired_cell(r)}, {r.get('rounds', '–')} | "
            f"{t_tps} | {t_ratio} | {r['upt_jax_mfu']:.1%} | {r['torch_mfu']:.1%} | "
            f"{dash(r['tunix_mfu'], '{:.1%}')} | {r['matmul_peak_gflops']} | {r['upt_jax_compile_s']} | "
            f"{dash(r['tunix_compile_s'])} | {r['upt_jax_temp_mb']} |"
        )
    versions = next((r["tunix_versions"] for r in samp + upd if r.get("tunix_versions")), None)
    lines += [
        "",
        "### Tunix",
        "",
        "Tunix (PyPI `google-tunix`"
        + (f" {versions['google-tunix']}, jax {versions['jax']}, flax {versions['flax']}" if versions else "")
        + ") runs in its own venv (`make bench-tunix-env`, CPU jaxlib) as a subprocess "
        "(`benchmarks/tunix_bench.py`), one run per table row, inside the same benchmark run as "
        "that row's upt_jax and PyTorch measurements. Its model is `tunix.models.qwen2.Qwen2` built "
        "from the same config (fp32, no mesh) with the same weights: the transformers model is saved "
        "and read by Tunix's own "
        "`qwen2.params.create_model_from_safe_tensors`.",
        "",
        "- Sampler: `tunix.generate.sampler.Sampler` (its own KV cache sized prompt + new tokens, "
        "`temperature=1, top_p=1`, no top-k, the EOS id set outside the vocabulary so every row makes "
        "all 64 tokens), the same prompt ids, a warm-up call first; compile s = warm-up call − timed call. "
        "Its API takes strings, so the ids go through a whitespace id tokenizer (a few µs per row).",
        "- Update step: Tunix's `GRPOLearner` cannot be called on a prepared batch — it needs an "
        "`RLCluster` (rollout engine, tokenizer, reference model, data iterator) and runs the rollout "
        "itself. What it runs for the update is measured instead: `tunix.rl.trainer.Trainer` (the "
        "cluster's actor trainer) with `algo_core.grpo_loss_fn` wired in as `GRPOLearner` wires it "
        "(ε = 0.2, β = 0 so no reference model, sequence-mean-token-mean, `old_per_token_logps` and "
        "group-normalised advantages given), its jitted `value_and_grad` + `nnx.Optimizer` step, "
        "`clip_by_global_norm(1) → adamw(1e-5)`. The batch is the same, split into prompt (first 64 "
        "positions) and completion. Unlike upt_jax and PyTorch, Tunix's loss also computes the "
        "per-token entropy over the full logits (a logged metric), part of its step. Tunix's step "
        "compiles twice with the model from its safetensors loader (the optimizer's scalar step "
        "counts start uncommitted next to committed weights, and are committed after the first "
        "update); Tunix compile s = first two steps − 2 × fastest step.",
    ]
    for r in upd:
        fl = r.get("first_loss") or {}
        if fl.get("torch") is not None and fl.get("upt_jax") is not None:
            tunix = f", Tunix {fl['tunix']:.6f}" if fl.get("tunix") is not None else ""
            lines.append(
                f"- First-step loss, {r['config']} (same weights and batch; GRPO's clipped objective "
                f"on every side): PyTorch {fl['torch']:.6f}{tunix}, upt_jax {fl['upt_jax']:.6f}."
            )
    lines += [
        "",
        f"## Memory: log-prob + entropy pass (forward + backward), vocabulary {mem['vocab']}",
        "",
        f"Qwen2-0.5B's output head (hidden {mem['hidden']}) on {mem['batch']} × {mem['seq']} tokens "
        "(`python -m benchmarks.memory_bench`): XLA's compiled temporary memory of value-and-grad "
        f"through `token_logprobs`. The naive pass holds the {mem['logits_mb']} MB of fp32 logits "
        "several times over; chunked, each chunk's logits are recomputed in the backward pass.",
        "",
        '| naive MB | chunked MB (chunk 128) | chunked / naive | `remat="auto"` MB |',
        "|---|---|---|---|",
        f"| {mem['naive_mb']} | {mem['chunked_mb']} | {mem['chunked_over_naive']:.1%} | {mem['auto_mb']} |",
        "",
        *own_runs.lora_lines(),
    ]
    lines += hpt_lines(hpt, hpt_pack) + [
        "### Rollout + reward with scoring overlapped (`rollout.overlap_chunks`)",
        "",
        "The same step's rollout + reward, its questions in C chunks: chunk k is scored in a thread "
        "while chunk k+1 is sampled. Scored by the math verifier (math-verify in its "
        f"{overlap['workers']}-process pool) on each rollout with a unique boxed answer appended, a "
        "fraction (cheap) or a radical (a symbolic answer, tens of ms) (`benchmarks/overlap_bench.py`: "
        "the tiny random model writes no answer of its own); "
        f"mean of {overlap['repeats']} interleaved repeats after a warm-up.",
        "",
        *overlap_bench.table(overlap),
        "",
        f"Peak resident memory of the benchmark process: {all_results['peak_rss_mb']} MB.",
        "",
        *startup_and_rl_step_lines(first, rl_rows),
        *own_runs.GPU_CHECK_LINES,
        *own_runs.HISTORY_LINES,
        "## Scaling",
        "",
        "![scaling](benchmarks/results/scaling.png)",
        "",
        f"Total benchmark time: {all_results['seconds']} s.",
    ]
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return all_results


if __name__ == "__main__":
    main()
