"""Ahead-of-time compile of experiments/hpt_paper.py at the Qwen2.5-Math-7B shape: per-device memory.

    python -m benchmarks.aot_memory                       # 8 simulated CPU devices, the full 7B shape
    python -m benchmarks.aot_memory --layers 4 --out aot.json   # fewer layers (per-layer scaling)

No weights are materialised: the model is ``nnx.eval_shape``'d from the Qwen2.5-Math-7B
``config.json`` values (`QWEN25_MATH_7B`), the train state by ``jax.eval_shape``, the batch and the
prompts are ``jax.ShapeDtypeStruct`` s. On the config's mesh (``mesh.fsdp=-1``: every device on
fsdp) with the repository's partition rules (`upt_jax.models.partition.DEFAULT_RULES`), it lowers
and compiles (``jax.jit(...).lower(...).compile()``):

* **update**: the trainer's update step (`upt_jax.train.step.make_train_step` with the config's
  recipe, optimiser, micro-batches and shardings) on one step's batch, ``questions_per_step ×
  (n + 1)`` rows of ``prompt_len + max_new_tokens`` tokens, accumulated over
  ``train.microbatches`` micro-batches (its temporaries are one micro-batch's);
* **sampler**: the sampler's program (`upt_jax.sampling.Sampler`: prefill, then the decode loop
  whose body is one decode step) for one rollout chunk (``questions_per_step /
  rollout.overlap_chunks`` prompts × ``n`` samples, a KV cache of ``prompt_len + max_new_tokens``).

Each row reports XLA's ``compiled.memory_analysis()`` per device (arguments, outputs, aliased,
temporaries, generated code; ``peak ≈ arguments + outputs − aliased + temporaries``), the
parameter and optimiser-state bytes per device and in all, and the compile time. The numbers are
the backend's that compiled them (XLA CPU here; a GPU or TPU compiler fuses differently).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

# Qwen2.5-Math-7B's config.json (Qwen2ForCausalLM)
QWEN25_MATH_7B = dict(
    model_type="qwen2",
    vocab_size=152064,
    hidden_size=3584,
    intermediate_size=18944,
    num_layers=28,
    num_heads=28,
    num_kv_heads=4,
    head_dim=128,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    max_position_embeddings=4096,
    tie_word_embeddings=False,
    qkv_bias=True,
    bos_token_id=151643,
    eos_token_id=151643,
)
PROMPT_LEN = 1024  # the released run's data.max_prompt_length
GIB = 2**30


def model_config(config, **overrides):
    """The `ModelConfig` of the Qwen2.5-Math-7B shape with the run's dtypes (``overrides`` win)."""
    from upt_jax.models.config import ModelConfig

    return ModelConfig(
        **{**QWEN25_MATH_7B, "param_dtype": config.model.param_dtype, "dtype": config.model.dtype, **overrides}
    )


def load_experiment(spec: str = "experiments/hpt_paper.py", overrides: tuple[str, ...] = ()):
    """The experiment config as ``upt train --config SPEC OVERRIDES...`` parses it."""
    from upt_jax.cli import load_config

    return load_config(["--config", spec, *overrides])


def shapes(config, prompt_len: int = PROMPT_LEN) -> dict:
    """The compiled shapes of ``config``: the step's rows and length, micro-batches, the sampler's
    prompts per call ``b`` (padded as the trainer's sampler pads them), prompt bucket ``p`` and
    generation bucket ``l``."""
    import numpy as np

    from upt_jax.models.partition import batch_shards, make_mesh
    from upt_jax.sampling.sampler import DEFAULT_LEN_BUCKETS, round_up

    m, t, r = config.mesh, config.train, config.rollout
    mesh = make_mesh(m.data, m.fsdp, m.tensor)
    shards = batch_shards(mesh)
    group = int(r.n) + 1  # HPT: n rollouts + the demonstration
    chunks = int(r.get("overlap_chunks", 1))
    chunk = -(-int(t.questions_per_step) // chunks)
    bucket = -(-chunk // shards) * shards if chunks > 1 else 8  # as the trainer builds its Sampler
    b = round_up(chunk, int(np.lcm(shards, bucket)))
    return dict(
        mesh=mesh,
        rows=int(t.questions_per_step) * group,
        group=group,
        seq=prompt_len + int(r.max_new_tokens),
        microbatches=int(t.microbatches),
        sampler_prompts=b,
        n=int(r.n),
        p=round_up(prompt_len, DEFAULT_LEN_BUCKETS),
        l=round_up(int(r.max_new_tokens), DEFAULT_LEN_BUCKETS),
    )


def _bytes(tree, shardings=None) -> tuple[int, int]:
    """``(total bytes, bytes on one device)`` of abstract arrays (device: their shards' shapes)."""
    import jax
    import numpy as np

    leaves = jax.tree.leaves(tree)
    total = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in leaves)
    if shardings is None:
        return total, total
    per = sum(
        int(np.prod(s.shard_shape(x.shape))) * x.dtype.itemsize for x, s in zip(leaves, jax.tree.leaves(shardings))
    )
    return total, per


def _row(name: str, compiled, seconds: float, **extra) -> dict:
    from benchmarks.common import compiled_memory

    sizes = compiled_memory(compiled)
    return dict(
        program=name,
        compile_s=round(seconds, 1),
        **{f"{k}_bytes": v for k, v in sizes.items()},
        **{f"{k}_gib": round(v / GIB, 3) for k, v in sizes.items()},
        **extra,
    )


def abstract_state(config, cfg, mesh):
    """``(graphdef, abstract TrainState, its shardings, optimiser)`` as the trainer builds them."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from upt_jax.models.transformer import abstract_model
    from upt_jax.train.stages import optimizer
    from upt_jax.train.state import TrainState, state_shardings

    tx = optimizer(config)  # the trainer's own
    graphdef, params = nnx.split(abstract_model(cfg, remat=config.model.remat))
    state = jax.eval_shape(
        lambda p: TrainState(
            step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p), rng=jax.random.key_data(jax.random.key(0))
        ),
        params,
    )
    return graphdef, state, state_shardings(state, mesh), tx


def batch_spec(config, rows: int, seq: int) -> dict:
    """The step's batch keys as the trainer builds an online HPT batch (`pack_rows`, `kept_set_rows`,
    rewards, is_demo), as ``ShapeDtypeStruct`` s of ``rows × seq``."""
    import jax
    import numpy as np

    from upt_jax.train.batching import pack_rows
    from upt_jax.train.trainer import kept_set_replay, kept_set_rows

    one = [np.zeros(1, np.float32)]
    probe = pack_rows(
        [[1]], [[1]], pad_id=0, response_values=dict(old_logp=one, rollout_logp=one, rollout_threshold=one)
    )
    probe.update(kept_set_rows(probe, kept_set_replay(config)))
    probe.pop("truncated")
    probe.update(rewards=np.zeros(1, np.float32), is_demo=np.zeros(1, bool))
    return {k: jax.ShapeDtypeStruct((rows, seq)[: v.ndim], v.dtype) for k, v in probe.items()}


def compile_update(config, cfg, sh: dict, state_parts=None) -> dict:
    """Lower and compile the trainer's update step at ``sh``'s shapes; its memory row."""
    from upt_jax.train.trainer import get_recipe, rollout_temperature
    from upt_jax.train.step import make_train_step, upge_objective

    graphdef, state, shardings, tx = state_parts or abstract_state(config, cfg, sh["mesh"])
    t = config.train
    objective = upge_objective(
        get_recipe(config),
        group_size=sh["group"],
        chunk_size=t.logprob_chunk,
        logits_remat=t.get("logprob_remat", "auto"),
        temperature=rollout_temperature(config),
    )
    step = make_train_step(
        graphdef,
        tx,
        objective,
        num_microbatches=sh["microbatches"],
        group_size=sh["group"],
        skip_grad_norm=t.skip_grad_norm,
        skip_update_ratio=t.get("skip_update_ratio", 1.0),
        mesh=sh["mesh"],
        shardings=shardings,
    )
    t0 = time.perf_counter()
    compiled = step.lower(state, batch_spec(config, sh["rows"], sh["seq"])).compile()
    return _row(
        "update",
        compiled,
        time.perf_counter() - t0,
        rows=sh["rows"],
        seq=sh["seq"],
        microbatch_rows=sh["rows"] // sh["microbatches"],
    )


def compile_sampler(config, cfg, sh: dict, state_parts=None) -> dict:
    """Lower and compile the sampler's program (prefill + decode loop) for one rollout chunk."""
    import jax
    import jax.numpy as jnp

    from upt_jax.models.partition import batch_sharding
    from upt_jax.models.transformer import abstract_model
    from upt_jax.sampling import Sampler, SamplingParams

    graphdef, state, shardings, _ = state_parts or abstract_state(config, cfg, sh["mesh"])
    r = config.rollout
    params = SamplingParams(
        max_new_tokens=sh["l"],
        temperature=r.temperature,
        top_k=r.top_k,
        top_p=r.top_p,
        n=sh["n"],
        stop_token_ids=(int(cfg.eos_token_id or 0),),
    )
    sampler = Sampler(abstract_model(cfg, remat=config.model.remat), pad_id=0, mesh=sh["mesh"], streams=1)
    placed = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state.params, shardings.params
    )
    b, p = sh["sampler_prompts"], sh["p"]
    prompt = jax.ShapeDtypeStruct((b, p), jnp.int32, sharding=batch_sharding(sh["mesh"]))
    args = (placed, prompt, prompt, jnp.asarray(sh["l"], jnp.int32), jax.random.key(0), jnp.asarray(0, jnp.int32))
    t0 = time.perf_counter()
    compiled = sampler.program(params, b, p, sh["l"]).lower(*args).compile()
    return _row("sampler", compiled, time.perf_counter() - t0, rows=b * sh["n"], seq=p + sh["l"], prompts=b)


def bench(
    spec: str = "experiments/hpt_paper.py",
    overrides: tuple[str, ...] = (),
    *,
    prompt_len: int = PROMPT_LEN,
    programs: tuple[str, ...] = ("update", "sampler"),
    **model_overrides,
) -> dict:
    """Compile ``programs`` for the experiment ``spec`` (with ``--config.`` ``overrides``) at the
    Qwen2.5-Math-7B shape (``model_overrides``: `ModelConfig` fields, e.g. ``num_layers=4``)."""
    import jax

    from upt_jax.hostinfo import host

    config = load_experiment(spec, overrides)
    cfg = model_config(config, **model_overrides)
    sh = shapes(config, prompt_len)
    parts = abstract_state(config, cfg, sh["mesh"])
    _, state, shardings, _ = parts
    params_total, params_dev = _bytes(state.params, shardings.params)
    opt_total, opt_dev = _bytes(state.opt_state, shardings.opt_state)
    fns = {"update": compile_update, "sampler": compile_sampler}
    rows = [fns[p](config, cfg, sh, parts) for p in programs]
    mesh = dict(zip(sh["mesh"].axis_names, (int(x) for x in sh["mesh"].devices.shape)))
    return dict(
        host=host(),
        jax=jax.__version__,
        backend=jax.default_backend(),
        experiment=spec,
        overrides=list(overrides),
        mesh=mesh,
        model={
            k: getattr(cfg, k)
            for k in (
                "num_layers",
                "hidden_size",
                "intermediate_size",
                "num_heads",
                "num_kv_heads",
                "vocab_size",
                "param_dtype",
                "dtype",
            )
        },
        remat=config.model.remat,
        params=cfg.num_params(),
        param_bytes=params_total,
        param_bytes_per_device=params_dev,
        opt_state_bytes=opt_total,
        opt_state_bytes_per_device=opt_dev,
        param_gib=round(params_total / GIB, 3),
        param_gib_per_device=round(params_dev / GIB, 3),
        opt_state_gib=round(opt_total / GIB, 3),
        opt_state_gib_per_device=round(opt_dev / GIB, 3),
        max_rss_gib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        rows=rows,
    )


def markdown(result: dict) -> str:
    """The per-device memory table of a `bench` result."""
    m = result["model"]
    lines = [
        f"{m['num_layers']} layers, {result['params'] / 1e9:.2f} B parameters ({m['param_dtype']} storage, "
        f"{m['dtype']} compute, remat={result['remat']}); mesh {result['mesh']}; {result['backend']} "
        f"backend, jax {result['jax']}.",
        "",
        f"Parameters: {result['param_gib']} GiB in all, {result['param_gib_per_device']} GiB per device; "
        f"AdamW state: {result['opt_state_gib']} GiB in all, {result['opt_state_gib_per_device']} GiB per device.",
        "",
        "| program | rows × tokens | arguments GiB | outputs GiB | aliased GiB | temporaries GiB | "
        "generated code MiB | peak GiB | compile s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        shape = f"{r['rows']} × {r['seq']}" + (
            f" ({r['microbatch_rows']} per micro-batch)" if "microbatch_rows" in r else ""
        )
        lines.append(
            f"| {r['program']} | {shape} | {r['argument_gib']} | {r['output_gib']} | {r['alias_gib']} | "
            f"{r['temp_gib']} | {r['code_bytes'] / 2**20:.1f} | {r['peak_gib']} | {r['compile_s']} |"
        )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="experiments/hpt_paper.py")
    ap.add_argument("--layers", type=int, default=None, help="num_layers (default: the 7B's 28)")
    ap.add_argument("--programs", nargs="*", default=["update", "sampler"], choices=["update", "sampler"])
    ap.add_argument("--prompt-len", type=int, default=PROMPT_LEN)
    ap.add_argument("--out", default=None, help="also write the result as JSON here")
    a, overrides = ap.parse_known_args(argv)
    kw = {} if a.layers is None else {"num_layers": a.layers}
    r = bench(a.config, tuple(overrides), prompt_len=a.prompt_len, programs=tuple(a.programs), **kw)
    print(json.dumps(r, indent=1))
    print(markdown(r))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(r, f, indent=1)
    return r


if __name__ == "__main__":
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
        ).strip()
    main()
