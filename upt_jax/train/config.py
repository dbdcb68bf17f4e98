"""The base experiment config (``ml_collections``) that every ``experiments/*.py`` extends.

    config = base_config()
    config.recipe.name = "grpo"
    ...

Every field is overridable from the command line: ``--config.train.steps=10``.
"""

from __future__ import annotations

import ml_collections

from upt_jax.data import synthetic
from upt_jax.models.lora import DEFAULT_TARGETS


def base_config() -> ml_collections.ConfigDict:
    """Defaults: GRPO on the built-in synthetic task with a tiny random model on CPU."""
    c = ml_collections.ConfigDict()
    c.name = "experiment"
    c.seed = 0
    c.run_dir = "runs/experiment"

    c.model = ml_collections.ConfigDict()
    c.model.init = "preset"  # preset | hf | checkpoint
    c.model.preset = "tiny"
    c.model.overrides = ml_collections.ConfigDict(dict(num_layers=2), type_safe=False)
    c.model.hf_dir = ""  # init=hf: a Hugging Face checkpoint directory
    c.model.checkpoint = ""  # init=checkpoint: an upt_jax run directory (its latest params)
    c.model.param_dtype = "float32"
    c.model.dtype = "float32"
    c.model.remat = "none"
    # LoRA adapters (upt_jax.models.lora, docs/lora.md): rank 0 trains every weight; rank r > 0
    # trains only the adapters of the linear layers whose path matches targets; quantize stores
    # the frozen base in int8/int4/nf4 (QLoRA)
    c.model.lora = ml_collections.ConfigDict(
        dict(rank=0, alpha=16.0, dropout=0.0, targets=DEFAULT_TARGETS, quantize="none", block_size=64)
    )

    c.tokenizer = "char"  # "char" (built-in) or a local tokenizer directory

    c.data = ml_collections.ConfigDict()
    c.data.source = "synthetic"  # synthetic | file | corpus (plain LM on synthetic.pretraining_corpus)
    c.data.tiers = synthetic.TRAIN_TIERS
    c.data.n_per_tier = 2000
    c.data.path = ""
    c.data.format = "auto"
    c.data.fields = ml_collections.ConfigDict(
        dict(question="question", answer="answer", demonstration="demonstration", id="id")
    )
    c.data.skip_bad_rows = False
    c.data.duplicates = "keep"  # keep | drop | error: rows that repeat a question (counted: data/duplicates)
    # a record whose text fields hold more characters is a bad row (None: no limit)
    c.data.max_row_chars = ml_collections.FieldReference(1_000_000, field_type=int)
    c.data.template = "zero"  # plain | zero | chat
    c.data.system_prompt = ml_collections.FieldReference(None, field_type=str)
    c.data.verifier = "integer"  # integer (synthetic) | math | math_strict | exact | choice
    # source=corpus (mode=offline): documents of synthetic.pretraining_corpus, every token trained on
    c.data.corpus = ml_collections.ConfigDict(
        dict(n_docs=20000, tiers=synthetic.EASY_TIERS, demo_fraction=0.75, facts_per_doc=12, pack_len=0)
    )  # pack_len > 0: consecutive documents share a row of about that many tokens
    c.data.corpus.options = ml_collections.ConfigDict(type_safe=False)  # the family's own corpus options

    c.recipe = ml_collections.ConfigDict()
    c.recipe.name = "grpo"
    c.recipe.hparams = ml_collections.ConfigDict(type_safe=False)
    c.mode = "online"  # online (rollouts) | offline (demonstrations: SFT) | preference (pairs: DPO)

    c.rollout = ml_collections.ConfigDict()
    c.rollout.n = 8
    c.rollout.max_new_tokens = 64
    c.rollout.temperature = 1.0
    c.rollout.top_p = 1.0
    c.rollout.top_k = 0
    # with top_k/top_p: train the truncated policy the rollouts were drawn from (π_θ renormalised
    # over each token's kept set, recorded by the sampler), so the first update's ratio is 1
    c.rollout.kept_set_replay = True
    # an ablation: the temperature of the policy trained, other than the sampling one (None: the
    # sampling τ, as verl and TRL); 1.0 at rollout.temperature 0.7 is upt_jax before issue #17's fix
    c.rollout.train_temperature = ml_collections.FieldReference(None, field_type=float)
    # > 1: split a step's questions into this many chunks and score chunk k (verifier, in a
    # thread) while chunk k+1 generates (upt_jax.train.overlap); 1 = generate all, then score
    c.rollout.overlap_chunks = 1
    # the sampler's concurrent row streams (upt_jax.sampling.Sampler(streams=)): "auto" = 2 on a
    # multi-core CPU host for a small single-device model, else 1; or an int ≥ 1
    c.rollout.streams = "auto"

    c.train = ml_collections.ConfigDict()
    c.train.steps = 20
    c.train.questions_per_step = 8
    c.train.microbatches = 1
    c.train.update_epochs = 1
    c.train.learning_rate = 1e-4
    c.train.schedule = "constant"  # constant | cosine | linear | wsd (constant, then decay_steps to 0)
    c.train.decay_steps = 0  # schedule=wsd: the last decay_steps of train.steps decay linearly to 0
    c.train.warmup_steps = 0
    c.train.weight_decay = 0.0
    c.train.max_grad_norm = 1.0
    c.train.skip_grad_norm = ml_collections.FieldReference(None, field_type=float)
    # skip (never apply, never save) an update with ‖Δθ‖ > skip_update_ratio · ‖θ‖ (a divergence,
    # e.g. learning_rate=1e30); None: no bound. Non-finite results are always skipped.
    c.train.skip_update_ratio = ml_collections.FieldReference(1.0, field_type=float)
    c.train.max_nonfinite_in_a_row = 5
    c.train.dynamic_sampling = False  # DAPO: keep drawing until every group has reward variance
    c.train.dynamic_sampling_max_draws = 4
    c.train.logprob_chunk = 128
    # "auto": chunk + recompute the [B, T, V] logits in the backward pass only when they would
    # exceed 1 GiB (otherwise keep them: one matmul fewer); "always" / "never"
    c.train.logprob_remat = "auto"
    # update step on packed rows: several sequences per row (first-fit-decreasing, segment ids), the
    # log-probs gathered back to the padded layout, so the loss is the same with less padding computed
    c.train.pack_sequences = False
    # update step: each group's shared prompt (a question's rollouts, a preference pair) runs through
    # the decoder once and its n responses continue from its keys and values; the output head runs on
    # the response columns only. The same loss up to float reordering; less compute with long prompts
    c.train.share_prompt = False
    # in-training evaluation (upt_jax.train.in_training): every eval_every steps (0: never), eval_n questions
    # × eval_k samples from eval_path (else fresh synthetic draws, else the training file's first rows)
    c.train.eval_every = 0
    c.train.eval_path = ""
    c.train.eval_n = 32
    c.train.eval_k = 1

    # where rollout rewards come from: the data's verifier, or a trained reward model (RLHF)
    # prm_run_dir: a process reward model whose per-step scores go into the batch (grpo_process)
    # functions: reward functions fn(prompts, completions, **columns) -> list[float] by import path
    # ("my_rewards:length_penalty") or built-in name ("math", "format", ...), summed with weights (default
    # all 1), each call limited to timeout_s in the worker pool (upt_jax.rewards.functions); () = data.verifier
    c.reward = ml_collections.ConfigDict(
        dict(
            source="verifier",
            model_run_dir="",
            normalize="none",
            prm_run_dir="",
            functions=(),
            weights=(),
            timeout_s=5.0,
        )
    )

    # PPO's value model; update_epochs None: as many updates per step as the policy's train.update_epochs
    c.critic = ml_collections.ConfigDict(
        dict(learning_rate=1e-4, clip=0.2, update_epochs=ml_collections.FieldReference(None, field_type=int))
    )

    # the frozen teacher of distillation recipes (distill_fkl, distill_on_policy): a previous
    # upt_jax run directory (its latest params; its shape from its config.json) or a HF checkpoint.
    # Any shape; the same tokenizer as the student (its vocabulary is checked). preset/overrides:
    # only for a run directory without config.json.
    c.teacher = ml_collections.ConfigDict(
        dict(
            run_dir="",
            hf_dir="",
            param_dtype="float32",
            dtype="float32",
            remat="none",
            preset="tiny",
            overrides=ml_collections.ConfigDict(dict(num_layers=2), type_safe=False),
        )
    )

    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))

    # XLA's persistent compilation cache (upt_jax.train.compile_cache): "auto" = $UPT_JAX_COMPILE_CACHE,
    # else ~/.cache/upt_jax/xla; a directory; or "off"
    c.compile_cache = "auto"

    # preemption_grace_s: after a SIGTERM/SIGINT, the step and its checkpoint must finish within
    # this many seconds, else the process exits without that save (upt_jax.train.preemption)
    c.checkpoint = ml_collections.ConfigDict(dict(every=10, keep=2, async_save=True, preemption_grace_s=120.0))
    # completions: every rollout to <run_dir>/completions.jsonl; show_completions=N: log two every N steps
    c.log = ml_collections.ConfigDict(
        dict(every=1, tensorboard=False, progress=True, completions=True, show_completions=0)
    )
    return c
