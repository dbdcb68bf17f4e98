"""Memory of the update step: full fine-tuning vs LoRA vs QLoRA, on a Qwen2-0.5B-shaped config.

    python -m benchmarks.lora_memory [--preset qwen2-0.5b --rank 16 --batch 4 --seq 512]

It compiles a 0.5B-parameter step three times (20 minutes on the 2-core Intel Xeon), so
``benchmarks.run_all`` does not rerun it: this command writes its result with its host and date to
``benchmarks/results/lora_memory.json`` (``--out``), and ``run_all`` renders that file into
BENCHMARKS.md (``benchmarks/own_runs.py``).

Abstract shapes only (``nnx.eval_shape`` / ``jax.eval_shape``: no weights are allocated). For each
setting it reports the trainable parameters, the bytes of the stored params (base + adapters; QLoRA's
base quantised to nf4 through qwix), the optimiser state's bytes (AdamW: two moments of every
trained parameter) and XLA's compiled memory analysis of the jitted, donated SFT update step
(``upt_jax.train.step.make_train_step``, the trainer's): ``peak ≈ arguments + outputs − aliased +
temporaries``. The compiled numbers are the CPU backend's (it stores int4/uint4 one byte per
element; an accelerator may pack them).
"""

from __future__ import annotations

import argparse
import json
import os
import time

RESULT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "lora_memory.json")


def setting(
    preset: str,
    mode: str,
    *,
    rank: int = 16,
    batch: int = 4,
    seq: int = 512,
    param_dtype: str = "float32",
    dtype: str = "float32",
    remat: str = "none",
    **overrides,
) -> dict:
    """One row: ``mode`` is ``full``, ``lora`` or ``qlora`` (nf4 base)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from benchmarks.common import compiled_memory
    from upt_jax import upge
    from upt_jax.models import init_model, preset as get_preset
    from upt_jax.models.lora import LoraConfig, apply_lora
    from upt_jax.train.state import TrainState, make_optimizer, trainable_split
    from upt_jax.train.step import make_train_step, upge_objective

    cfg = get_preset(preset, param_dtype=param_dtype, dtype=dtype, **overrides)
    lora = (
        None
        if mode == "full"
        else LoraConfig(rank=rank, alpha=2.0 * rank, quantize="nf4" if mode == "qlora" else "none")
    )

    def build():
        model = init_model(cfg, 0, remat=remat)
        return model if lora is None else apply_lora(model, lora)

    graphdef, params = nnx.split(nnx.eval_shape(build))
    trainable = None if lora is None else nnx.LoRAParam
    tx = make_optimizer(1e-5)
    state = jax.eval_shape(
        lambda p: TrainState(
            step=jnp.zeros((), jnp.int32),
            params=p,
            opt_state=tx.init(trainable_split(p, trainable)[0]),
            rng=jax.random.key_data(jax.random.key(0)),
        ),
        params,
    )
    tokens = jax.ShapeDtypeStruct((batch, seq), jnp.int32)
    batch_arrays = dict(tokens=tokens, attention_mask=tokens, mask=tokens)
    step = make_train_step(
        graphdef, tx, upge_objective(upge.get_recipe("sft"), with_entropy=False), trainable=trainable
    )
    mem = compiled_memory(step.lower(state, batch_arrays).compile())
    nbytes = lambda tree: sum(x.size * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))
    trained = trainable_split(params, trainable)[0]
    gb = lambda b: round(b / 2**30, 3)
    sizes = dict(
        param_bytes=nbytes(params),
        opt_state_bytes=nbytes(state.opt_state),
        temp_bytes=mem["temp"],
        peak_bytes=mem["peak"],
    )
    return dict(
        mode=mode,
        rank=0 if lora is None else rank,
        params=sum(x.size for x in jax.tree.leaves(params)),
        trainable_params=sum(x.size for x in jax.tree.leaves(trained)),
        **sizes,
        **{k.replace("_bytes", "_gib"): gb(v) for k, v in sizes.items()},
    )


def bench(preset: str = "qwen2-0.5b", rank: int = 16, batch: int = 4, seq: int = 512, **kw) -> dict:
    from upt_jax.hostinfo import host

    rows = [setting(preset, m, rank=rank, batch=batch, seq=seq, **kw) for m in ("full", "lora", "qlora")]
    return dict(
        host=host(),
        date=time.strftime("%Y-%m-%d"),
        preset=preset,
        batch=batch,
        seq=seq,
        remat=kw.get("remat", "none"),
        rows=rows,
    )


def markdown(result: dict) -> str:
    lines = [
        "| setting | trainable params | stored params GiB | optimiser state GiB | step temporaries GiB | "
        "step peak GiB |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        name = {"full": "full fine-tuning", "lora": f"LoRA r={r['rank']}", "qlora": f"QLoRA r={r['rank']} (nf4)"}
        lines.append(
            f"| {name[r['mode']]} | {r['trainable_params']:,} | {r['param_gib']} | {r['opt_state_gib']} | "
            f"{r['temp_gib']} | {r['peak_gib']} |"
        )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="qwen2-0.5b")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--remat", default="none")
    ap.add_argument("--out", default=RESULT_PATH, help="where the JSON result goes ('-': nowhere)")
    a = ap.parse_args(argv)
    r = bench(a.preset, a.rank, a.batch, a.seq, remat=a.remat)
    print(json.dumps(r, indent=1))
    if a.out != "-":
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(r, f, indent=1)
    print(markdown(r))
    return r


if __name__ == "__main__":
    main()
