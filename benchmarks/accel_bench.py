"""Accelerator targets of issue #8: update-step MFU of a Qwen2-0.5B-shaped model in bf16 at
sequence 2048, and decode throughput against the HBM-bandwidth roofline.

    python -m benchmarks.accel_bench                       # on a GPU/TPU: qwen2-0.5b, bf16, 4 × 2048
    python -m benchmarks.accel_bench --config tiny --batch 4 --seq 64 --decode-batch 4 \\
        --new-tokens 8 --dtype float32                     # a smoke run anywhere (the tests do this)

Update step: the GRPO loss + AdamW step of ``benchmarks/update_bench.py`` (fp32 parameters,
``--dtype`` compute), random tokens. MFU = model FLOPs / s (``6·N·tokens`` + attention, as in
update_bench) ÷ the dense matmul peak in the same dtype measured in this run (an 8192² matmul
on accelerators), and ÷ the vendor's dense peak when the device is one this file knows.

Decode: ``Sampler.generate`` on ``--decode-batch`` prompts of ``--prompt-len`` tokens, bf16
parameters and cache, no stop token. A decode step must read every parameter and the whole
allocated KV cache once, so its time is at least ``bytes / bandwidth``: the roofline tokens/s
is ``batch / (bytes / bandwidth)`` with the bandwidth measured in this run (a large array read +
written). Decode time is the full call minus a one-token call (the prefill), over the remaining
steps.
"""

from __future__ import annotations

import argparse
import json
import time

# dense (no sparsity) peak FLOP/s by dtype, per device, from the vendors' datasheets
VENDOR_PEAK = {
    "H100": {"bfloat16": 989e12, "float32": 67e12},  # SXM; PCIe is lower (756 / 51)
    "H200": {"bfloat16": 989e12, "float32": 67e12},
    "A100": {"bfloat16": 312e12, "float32": 19.5e12},
    "TPU v5 lite": {"bfloat16": 197e12},
    "TPU v4": {"bfloat16": 275e12},
}


def _best_time(fn, repeats: int) -> float:
    import jax

    jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(dtype: str, n: int, repeats: int = 5) -> float:
    """Measured dense matmul FLOP/s of ``n × n`` operands in ``dtype``."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda a, b: a @ b)
    return 2 * n**3 / _best_time(lambda: f(a, a), repeats)


def memory_bandwidth(nbytes: int, repeats: int = 5) -> float:
    """Measured bytes/s of an elementwise pass that reads and writes ``nbytes`` each."""
    import jax
    import jax.numpy as jnp

    x = jnp.ones((nbytes // 4,), jnp.float32)
    f = jax.jit(lambda x: x * 1.0001 + 1.0)
    return 2 * nbytes / _best_time(lambda: f(x), repeats)


def vendor_peak(device_kind: str, dtype: str) -> float | None:
    for name, peaks in VENDOR_PEAK.items():
        if name.lower() in device_kind.lower():
            return peaks.get(dtype)
    return None


def update_mfu(
    config: str, batch: int, seq: int, dtype: str, remat: str, steps: int, peak: float, vendor: float | None
) -> dict:
    from benchmarks.update_bench import bench_jax, make_batch, train_flops_per_token
    from upt_jax.models import preset

    cfg = preset(config, dtype=dtype, param_dtype="float32")
    step_s, compile_s, temp_bytes = bench_jax(cfg, make_batch(cfg.vocab_size, batch, seq), steps, remat)
    flops = train_flops_per_token(cfg, seq) * batch * seq / step_s
    return dict(
        config=config,
        params=cfg.num_params(),
        batch=batch,
        seq=seq,
        dtype=dtype,
        remat=remat,
        step_s=round(step_s, 4),
        tokens_per_s=round(batch * seq / step_s, 1),
        model_tflops=flops / 1e12,
        mfu_measured_peak=round(flops / peak, 4),
        mfu_vendor_peak=round(flops / vendor, 4) if vendor else None,
        compile_s=round(compile_s, 2),
        temp_gb=round(temp_bytes / 1e9, 2),
    )


def decode_roofline(config: str, batch: int, prompt_len: int, new_tokens: int, dtype: str, bandwidth: float) -> dict:
    import jax
    import numpy as np

    from upt_jax.models import init_model, preset
    from upt_jax.sampling import Sampler, SamplingParams
    from upt_jax.sampling.sampler import DEFAULT_LEN_BUCKETS, round_up

    cfg = preset(config, dtype=dtype, param_dtype=dtype)
    model = init_model(cfg, 0)
    rng = np.random.RandomState(0)
    prompts = [rng.randint(1, cfg.vocab_size, prompt_len).tolist() for _ in range(batch)]
    # one stream: the roofline bounds one decode loop's step (CPU's auto streams would split it)
    sampler = Sampler(model, pad_id=0, batch_bucket=1, streams=1)

    def run(n: int, key: int) -> float:
        params = SamplingParams(max_new_tokens=n, temperature=1.0)
        sampler.generate(prompts, jax.random.key(key), params)  # compile + warm
        return min(sampler.generate(prompts, jax.random.key(key + r + 1), params).run_s for r in range(3))

    full, prefill = run(new_tokens, 0), run(1, 100)
    step_s = max(full - prefill, 1e-9) / max(new_tokens - 1, 1)
    itemsize = np.dtype(cfg.jnp_dtype).itemsize
    slots = round_up(prompt_len, DEFAULT_LEN_BUCKETS) + round_up(new_tokens, DEFAULT_LEN_BUCKETS)
    kv_bytes = 2 * cfg.num_layers * batch * slots * cfg.num_kv_heads * cfg.head_dim * itemsize
    param_bytes = cfg.num_params() * itemsize
    roofline_step_s = (param_bytes + kv_bytes) / bandwidth
    return dict(
        config=config,
        batch=batch,
        prompt_len=prompt_len,
        new_tokens=new_tokens,
        dtype=dtype,
        decode_step_ms=round(step_s * 1e3, 3),
        decode_tokens_per_s=round(batch / step_s, 1),
        prefill_s=round(prefill, 4),
        param_mb=round(param_bytes / 1e6, 3),
        kv_mb=round(kv_bytes / 1e6, 3),
        roofline_step_ms=round(roofline_step_s * 1e3, 3),
        roofline_tokens_per_s=round(batch / roofline_step_s, 1),
        fraction_of_roofline=round(roofline_step_s / step_s, 4),
    )


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="qwen2-0.5b")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--remat", default="none")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--decode-batch", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--peak-n", type=int, default=None, help="matmul size for the peak (default 8192, CPU 1024)")
    ap.add_argument(
        "--bandwidth-mb", type=int, default=None, help="array size for the bandwidth (default 2048, CPU 256)"
    )
    ap.add_argument("--json", help="write the result here")
    a = ap.parse_args(argv)
    from benchmarks.update_bench import G

    if a.batch % G:
        ap.error(f"--batch must be a multiple of the GRPO group size {G}")
    import jax

    dev = jax.devices()[0]
    on_cpu = dev.platform == "cpu"
    peak = matmul_peak(a.dtype, a.peak_n or (1024 if on_cpu else 8192))
    bandwidth = memory_bandwidth((a.bandwidth_mb or (256 if on_cpu else 2048)) << 20)
    vendor = vendor_peak(dev.device_kind, a.dtype)
    res = dict(
        device=f"{dev.platform} {dev.device_kind}",
        measured_peak_tflops=round(peak / 1e12, 2),
        vendor_peak_tflops=vendor / 1e12 if vendor else None,
        measured_bandwidth_gbs=round(bandwidth / 1e9, 1),
        update=update_mfu(a.config, a.batch, a.seq, a.dtype, a.remat, a.steps, peak, vendor),
        decode=decode_roofline(a.config, a.decode_batch, a.prompt_len, a.new_tokens, a.dtype, bandwidth),
    )
    print(json.dumps(res, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
