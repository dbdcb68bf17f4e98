"""A one-accelerator check in ≤ 5 minutes: does upt_jax train correctly and fast on this device?

    python -m benchmarks.gpu_check --json gpu_check.json      # on a GPU (or TPU) host
    python -m benchmarks.gpu_check --smoke                     # anywhere, tiny and fast (the test)

Five checks, each a section of the JSON and one line of the summary:

1. ``parity``: the gradient of one GRPO loss (the trainer's objective: `upge_objective`) on the
   same fp32 weights and batch, on the CPU and on the accelerator: the largest per-leaf relative
   error ``‖g_acc − g_cpu‖ / ‖g_cpu‖``, at ``highest`` matmul precision (must be ≤ 1e-4) and at the
   default one (TF32 on recent NVIDIA GPUs; reported, ≤ 2e-2).
2. ``bf16``: ``--bf16-steps`` SFT updates (AdamW, lr 1e-3) of the model in bf16 compute on one
   fixed batch: every loss finite and the last below the first.
3. ``orbax``: the train state saved with the trainer's ``Checkpointer`` and restored onto the
   device: every leaf bitwise equal.
4. ``update``: the GRPO + AdamW step's MFU (``benchmarks.accel_bench.update_mfu``: model FLOP/s ÷
   the dense matmul peak measured in this run, and ÷ the vendor's datasheet peak when known).
5. ``decode``: ``Sampler`` decode tokens/s against the HBM roofline (every parameter and the
   whole KV cache read once per step, at the bandwidth measured in this run;
   ``benchmarks.accel_bench.decode_roofline``).

Defaults (a GPU): parity/bf16/orbax on ``small``; update on ``qwen2-0.5b`` bf16 4 × 1024; decode
``qwen2-0.5b`` bf16, 32 prompts of 128 + 128 new tokens. ``--smoke``: ``tiny`` everywhere at toy
sizes (the CPU test runs this). Exit status 1 when a pass/fail check fails.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

PARITY_TOL = {"highest": 1e-4, "default": 2e-2}
# a model small enough to compile in a second or two on a busy CPU (the default test suite's checks)
MICRO = dict(
    num_layers=1, hidden_size=64, intermediate_size=128, vocab_size=256, num_heads=2, num_kv_heads=1, head_dim=32
)


def _model_and_batch(config: str, dtype: str, batch: int, seq: int, overrides: dict | None = None):
    from benchmarks.update_bench import make_batch
    from upt_jax.models import init_model, preset

    cfg = preset(config, dtype=dtype, param_dtype="float32", **(overrides or {}))
    return init_model(cfg, 0), make_batch(cfg.vocab_size, batch, seq)


def _grad_fn(graphdef, recipe: str):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from benchmarks.update_bench import G
    from upt_jax import upge
    from upt_jax.train import upge_objective

    obj = upge_objective(upge.get_recipe(recipe), group_size=G, logits_remat="never")

    def loss(params, batch):
        b, _ = obj.prepare(batch)
        dens = obj.denominators(b)
        sums, _ = obj.sums(nnx.merge(graphdef, params), b)
        return sum(jnp.where(dens[k] > 0, sums[k] / jnp.where(dens[k] > 0, dens[k], 1.0), 0.0) for k in sums)

    return jax.jit(jax.grad(loss))


def gradient_parity(config: str, batch: int, seq: int, overrides: dict | None = None) -> dict:
    """Max per-leaf relative error of the GRPO gradient, accelerator vs CPU, per matmul precision."""
    import jax
    import numpy as np
    from flax import nnx

    model, batch_np = _model_and_batch(config, "float32", batch, seq, overrides)
    graphdef, params = nnx.split(model)
    grad = _grad_fn(graphdef, "grpo")
    cpu, acc = jax.devices("cpu")[0], jax.devices()[0]
    out = {"device": f"{acc.platform} {acc.device_kind}", "config": config, "batch": batch, "seq": seq}
    # XLA CPU computes fp32 matmuls in fp32 at every precision: one pass when both devices are CPUs
    for precision in ("highest",) if acc.platform == "cpu" else ("highest", "default"):
        with jax.default_matmul_precision(precision if precision == "highest" else None):
            gs = [jax.device_get(grad(jax.device_put(params, d), jax.device_put(batch_np, d))) for d in (cpu, acc)]
        errs = [
            float(np.linalg.norm(np.asarray(a) - np.asarray(c)) / max(np.linalg.norm(np.asarray(c)), 1e-30))
            for c, a in zip(jax.tree.leaves(gs[0]), jax.tree.leaves(gs[1]))
        ]
        out[f"max_rel_err_{precision}"] = max(errs)
        out[f"ok_{precision}"] = bool(max(errs) <= PARITY_TOL[precision])
    if acc.platform == "cpu":
        out["max_rel_err_default"], out["ok_default"] = out["max_rel_err_highest"], out["ok_highest"]
    out["ok"] = out["ok_highest"] and out["ok_default"]
    return out


def bf16_steps(config: str, batch: int, seq: int, steps: int, overrides: dict | None = None) -> dict:
    """``steps`` SFT updates in bf16 compute on one batch: finite losses, the last below the first."""
    import jax
    import numpy as np

    from upt_jax import upge
    from upt_jax.train import create_train_state, make_optimizer, make_train_step, upge_objective

    model, batch_np = _model_and_batch(config, "bfloat16", batch, seq, overrides)
    tx = make_optimizer(1e-3, max_grad_norm=1.0)
    graphdef, state, _ = create_train_state(model, tx)
    step = make_train_step(graphdef, tx, upge_objective(upge.get_recipe("sft")))
    b = jax.device_put({k: v for k, v in batch_np.items() if k in ("tokens", "attention_mask", "mask")})
    losses = []
    for _ in range(steps):
        state, m = step(state, b)
        losses.append(float(m["loss"]))
    ok = bool(np.all(np.isfinite(losses)) and losses[-1] < losses[0])
    return {"config": config, "steps": steps, "losses": [round(x, 5) for x in losses], "ok": ok}


def orbax_round_trip(config: str, overrides: dict | None = None) -> dict:
    """The train state through the trainer's ``Checkpointer``: restored leaves bitwise equal."""
    import jax
    import numpy as np

    from upt_jax.models import init_model, preset
    from upt_jax.train import create_train_state, make_optimizer
    from upt_jax.train.checkpoint import Checkpointer, abstract_with_shardings

    tx = make_optimizer(1e-4)
    _, state, _ = create_train_state(init_model(preset(config, **(overrides or {})), 0), tx)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        ckpt = Checkpointer(d, keep=1, async_save=False)
        try:
            ckpt.save(1, state, {"step": 1}, force=True)
            ckpt.wait()
            restored, extra = ckpt.restore(abstract_with_shardings(state))
        finally:
            ckpt.close()
    same = all(
        np.array_equal(np.asarray(a), np.asarray(b)) and a.dtype == b.dtype
        for a, b in zip(jax.tree.leaves(jax.device_get(state)), jax.tree.leaves(jax.device_get(restored)))
    )
    on_device = all(x.devices() == {jax.devices()[0]} for x in jax.tree.leaves(restored) if hasattr(x, "devices"))
    return {
        "config": config,
        "leaves": len(jax.tree.leaves(state)),
        "seconds": round(time.perf_counter() - t0, 2),
        "ok": bool(same and on_device and extra.get("step") == 1),
    }


def run(a) -> dict:
    import jax

    from benchmarks import accel_bench

    dev = jax.devices()[0]
    t0 = time.perf_counter()
    res = {"device": f"{dev.platform} {dev.device_kind}"}
    res["parity"] = gradient_parity(a.check_config, 8, a.check_seq)
    res["bf16"] = bf16_steps(a.check_config, 8, a.check_seq, a.bf16_steps)
    res["orbax"] = orbax_round_trip(a.check_config)
    on_cpu = dev.platform == "cpu"
    peak = accel_bench.matmul_peak(a.dtype, a.peak_n or (256 if on_cpu else 8192))
    bandwidth = accel_bench.memory_bandwidth((a.bandwidth_mb or (16 if on_cpu else 2048)) << 20)
    vendor = accel_bench.vendor_peak(dev.device_kind, a.dtype)
    res.update(
        measured_peak_tflops=round(peak / 1e12, 3),
        measured_bandwidth_gbs=round(bandwidth / 1e9, 1),
        vendor_peak_tflops=vendor / 1e12 if vendor else None,
    )
    res["update"] = accel_bench.update_mfu(a.config, a.batch, a.seq, a.dtype, "none", a.steps, peak, vendor)
    res["decode"] = accel_bench.decode_roofline(
        a.config, a.decode_batch, a.prompt_len, a.new_tokens, a.dtype, bandwidth
    )
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["ok"] = all(res[k]["ok"] for k in ("parity", "bf16", "orbax"))
    return res


def summary(res: dict) -> list[str]:
    p, b, o, u, d = (res[k] for k in ("parity", "bf16", "orbax", "update", "decode"))
    mark = lambda ok: "ok" if ok else "FAILED"
    return [
        f"gpu_check on {res['device']} ({res['seconds']} s): {mark(res['ok'])}",
        f"  parity  {mark(p['ok'])}: GRPO gradient vs CPU, max rel. error {p['max_rel_err_highest']:.2e} "
        f"(highest precision), {p['max_rel_err_default']:.2e} (default)",
        f"  bf16    {mark(b['ok'])}: {b['steps']} SFT steps, loss {b['losses'][0]} → {b['losses'][-1]}",
        f"  orbax   {mark(o['ok'])}: {o['leaves']} leaves saved and restored bitwise in {o['seconds']} s",
        f"  update  {u['config']} {u['dtype']} {u['batch']} × {u['seq']}: {u['tokens_per_s']} tok/s, MFU "
        f"{u['mfu_measured_peak']:.1%} of the measured peak ({res['measured_peak_tflops']} TFLOP/s)"
        + (f", {u['mfu_vendor_peak']:.1%} of the datasheet's" if u["mfu_vendor_peak"] else ""),
        f"  decode  {d['config']} batch {d['batch']}: {d['decode_tokens_per_s']} tok/s, "
        f"{d['fraction_of_roofline']:.1%} of the HBM roofline ({res['measured_bandwidth_gbs']} GB/s measured)",
    ]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes everywhere (CPU test)")
    ap.add_argument("--check-config", default="small", help="model of the parity / bf16 / Orbax checks")
    ap.add_argument("--check-seq", type=int, default=256)
    ap.add_argument("--bf16-steps", type=int, default=5)
    ap.add_argument("--config", default="qwen2-0.5b", help="model of the MFU and roofline measurements")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--decode-batch", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--peak-n", type=int, default=None)
    ap.add_argument("--bandwidth-mb", type=int, default=None)
    ap.add_argument("--json", help="write the result here")
    a = ap.parse_args(argv)
    if a.smoke:
        a.check_config, a.check_seq, a.bf16_steps, a.config, a.dtype = "tiny", 32, 3, "tiny", "float32"
        a.batch, a.seq, a.steps, a.decode_batch, a.prompt_len, a.new_tokens = 4, 32, 1, 2, 8, 16
    res = run(a)
    print(json.dumps(res, indent=2))
    print("\n".join(summary(res)))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    import sys

    sys.exit(0 if main()["ok"] else 1)
