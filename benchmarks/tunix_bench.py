"""The Tunix side of the side-by-side benchmarks; runs in its own venv (``make bench-tunix-env``).

    echo '{"task": "sampler", "model": {...}, ...}' | .venv-tunix/bin/python benchmarks/tunix_bench.py

upt_jax's ``benchmarks.sampler_bench`` / ``update_bench`` start this script with
``.venv-tunix/bin/python`` (see ``benchmarks.common.run_tunix``): Tunix (PyPI ``google-tunix``)
pins its own jax/flax/orbax/grain stack, so it never shares a process, or a venv, with upt_jax.
The task comes as one JSON object on stdin (or as the first argument) and the result goes back
as one stdout line ``TUNIX_RESULT {json}`` (Tunix and absl may log other lines around it).

Tasks, on ``tunix.models.qwen2.model.Qwen2`` built from the request's config (float32, no mesh)
with the weights in ``weights_dir`` (the upt_jax side's transformers model, saved; read by
Tunix's ``qwen2.params.create_model_from_safe_tensors``), or Tunix's random init without one:

* ``sampler``: ``tunix.generate.sampler.Sampler`` — temperature 1, full vocabulary (``top_p=1``,
  no top-k), no stop token (the EOS id is outside the vocabulary), ``batch`` prompts of
  ``prompt_len`` random ids × ``new_tokens`` new tokens. A warm-up call (compile + run) comes
  first; new tokens/s is from the fastest of ``repeats`` timed calls.
* ``update``: the GRPO update step Tunix's ``GRPOLearner`` runs, minus its ``RLCluster``:
  ``tunix.rl.trainer.Trainer`` (the actor trainer class) with the loss wired as
  ``GRPOLearner.__init__`` wires it — ``algo_core.grpo_loss_fn`` (PPO clip ε = 0.2, β = 0 so no
  reference model, ``sequence-mean-token-mean``) on a ``TrainExample`` — and its jitted train
  step (``jit_train_and_eval_step``: value_and_grad, global norm, ``nnx.Optimizer`` update) with
  ``clip_by_global_norm(1) → adamw(1e-5)``. Tokens/s counts every position of the batch; two
  warm-up steps (it compiles twice, see ``bench_update``), then the fastest of ``steps`` steps.
"""

from __future__ import annotations

import json
import sys
import time

RESULT_PREFIX = "TUNIX_RESULT "


class _IdTokenizer:
    """A tokenizer for Tunix's sampler over plain ids: ``"3 17 5"`` <-> ``[3, 17, 5]``."""

    def __init__(self, pad_id: int, eos_id: int):
        self._pad, self._eos = pad_id, eos_id

    def encode(self, text, **kw):
        return [int(t) for t in text.split()]

    def decode(self, ids, **kw):
        return " ".join(str(int(i)) for i in ids)

    def bos_id(self):
        return None  # no BOS prepended

    def eos_id(self):
        return self._eos

    def pad_id(self):
        return self._pad


def _model(m: dict, weights_dir: str | None = None, seed: int = 0):
    """Tunix's Qwen2 for the request's config: the weights from ``weights_dir`` (a transformers
    ``save_pretrained`` directory, loaded by Tunix's own safetensors loader) or random."""
    import jax.numpy as jnp
    from flax import nnx
    from tunix.models.qwen2 import model as qwen2
    from tunix.models.qwen2 import params as qwen2_params

    cfg = qwen2.ModelConfig(
        num_layers=m["num_layers"],
        vocab_size=m["vocab_size"],
        embed_dim=m["hidden_size"],
        hidden_dim=m["intermediate_size"],
        num_heads=m["num_heads"],
        head_dim=m["head_dim"],
        num_kv_heads=m["num_kv_heads"],
        rope_theta=int(m.get("rope_theta", 10000)),
        norm_eps=m.get("rms_norm_eps", 1e-6),
        use_tied_embedding=bool(m.get("tie_word_embeddings", False)),
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    )
    if weights_dir:
        return qwen2_params.create_model_from_safe_tensors(weights_dir, cfg), cfg
    return qwen2.Qwen2(cfg, rngs=nnx.Rngs(seed)), cfg


def bench_sampler(req: dict) -> dict:
    import numpy as np
    from tunix.generate import sampler as sampler_lib

    m = req["model"]
    batch, new_tokens, prompt_len = req["batch"], req["new_tokens"], req["prompt_len"]
    model, cfg = _model(m, req.get("weights_dir"))
    vocab = m["vocab_size"]
    tok = _IdTokenizer(pad_id=0, eos_id=vocab)  # id `vocab` is never sampled: no early stop
    sampler = sampler_lib.Sampler(
        model,
        tok,
        sampler_lib.CacheConfig(
            cache_size=prompt_len + new_tokens,
            num_layers=cfg.num_layers,
            num_kv_heads=cfg.num_kv_heads,
            head_dim=cfg.head_dim,
        ),
    )
    rng = np.random.RandomState(0)
    ids = req.get("prompts") or [rng.randint(1, vocab, prompt_len).tolist() for _ in range(batch)]
    prompts = [" ".join(map(str, p)) for p in ids]  # the same prompt ids as upt_jax's side
    kw = dict(
        max_generation_steps=new_tokens,
        max_prompt_length=prompt_len,
        temperature=1.0,
        top_p=1.0,
        top_k=None,
        eos_tokens=[vocab],
        echo=False,
    )

    t0 = time.perf_counter()
    sampler(prompts, seed=0, **kw)  # warm-up: compiles prefill and decode
    first_s = time.perf_counter() - t0
    times, n_new = [], 0
    for r in range(req.get("repeats", 3)):
        t0 = time.perf_counter()
        out = sampler(prompts, seed=r + 1, **kw)
        times.append(time.perf_counter() - t0)
        n_new = sum(len(t) for t in out.tokens)
    run_s = min(times)
    return dict(
        tokens_per_s=round(n_new / run_s, 1),
        new_tokens=n_new,
        run_s=round(run_s, 4),
        compile_s=round(max(first_s - run_s, 0.0), 2),
    )


def _train_example(b: dict, group: int):
    """upt_jax's update-bench batch as Tunix's ``TrainExample`` (prompt | completion split)."""
    import jax.numpy as jnp
    import numpy as np
    from tunix.rl.grpo.grpo_learner import TrainExample

    tokens = np.asarray(b["tokens"], np.int32)
    mask = np.asarray(b["mask"], np.float32)
    old_logp = np.asarray(b["old_logp"], np.float32)
    r = np.asarray(b["rewards"], np.float32).reshape(-1, group)
    adv = ((r - r.mean(1, keepdims=True)) / (r.std(1, keepdims=True) + 1e-6)).reshape(-1)  # as upt_jax
    p = int(b["prompt_len"])
    return TrainExample(
        prompt_ids=jnp.asarray(tokens[:, :p]),
        prompt_mask=jnp.ones((tokens.shape[0], p), jnp.int32),
        completion_ids=jnp.asarray(tokens[:, p:]),
        completion_mask=jnp.asarray(mask[:, p:]),
        advantages=jnp.asarray(adv),
        ref_per_token_logps=None,
        old_per_token_logps=jnp.asarray(old_logp[:, p:]),
    )


def bench_update(req: dict) -> dict:
    import jax
    import optax
    from flax import nnx
    from tunix.rl import algo_core
    from tunix.rl import trainer as rl_trainer
    from tunix.rl.grpo.grpo_learner import GRPOConfig
    from tunix.sft import peft_trainer

    model, _ = _model(req["model"], req.get("weights_dir"))
    group = req["group"]
    example = _train_example(req["batch"], group)
    algo = GRPOConfig(num_generations=group, beta=0.0, epsilon=0.2, loss_agg_mode="sequence-mean-token-mean")
    algo.temperature = 1.0  # GRPOLearner copies the rollout temperature in
    pad_id, eos_id = 0, req["model"]["vocab_size"]
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-5, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0))
    trainer = rl_trainer.Trainer(
        model, tx, peft_trainer.TrainingConfig(eval_every_n_steps=10**9), custom_checkpoint_metadata_fn=dict
    )
    # exactly as GRPOLearner.__init__ wires the actor trainer
    trainer.with_loss_fn(
        lambda model, train_example, algo_config: algo_core.grpo_loss_fn(
            model, train_example, algo_config=algo, pad_id=pad_id, eos_id=eos_id
        ),
        has_aux=True,
    )
    trainer.with_gen_model_input_fn(lambda x: {"train_example": x, "algo_config": algo})
    train_step, _ = trainer.jit_train_and_eval_step()

    def step():
        loss, aux, gnorm = train_step(example)
        jax.block_until_ready((loss, nnx.state(trainer.model, nnx.Param)))
        return float(loss)

    # Two warm-up steps: the jitted step compiles on the first call and, with the model from
    # Tunix's safetensors loader (committed arrays), once more on the second: nnx.Optimizer's
    # scalar ``step`` and AdamW's ``count`` start uncommitted and are committed after the first
    # update, so the second call misses the compilation cache.
    t0 = time.perf_counter()
    loss0 = step()
    step()
    warm_s = time.perf_counter() - t0
    times = []
    for _ in range(req.get("steps", 3)):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    step_s = min(times)
    n_tok = len(req["batch"]["tokens"]) * len(req["batch"]["tokens"][0])
    return dict(
        tokens_per_s=round(n_tok / step_s, 1),
        step_s=round(step_s, 4),
        compile_s=round(max(warm_s - 2 * step_s, 0.0), 2),
        first_loss=loss0,
    )


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    req = json.loads(argv[0] if argv and argv[0] != "-" else sys.stdin.read())
    import jax
    import tunix  # noqa: F401  (fail here, clearly, if the venv lacks it)
    from importlib.metadata import version

    fn = {"sampler": bench_sampler, "update": bench_update}[req["task"]]
    res = fn(req)
    res.update(
        task=req["task"],
        device=jax.devices()[0].platform,
        versions={p: version(p) for p in ("google-tunix", "jax", "flax", "optax")},
    )
    print(RESULT_PREFIX + json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
