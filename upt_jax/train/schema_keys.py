"""The schema's keys: one `Key` (path, domain, doc, default) per key of ``base_config()`` and of
the mode sections (`keys`), and the open dicts' entries (see `upt_jax.train.schema`)."""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from typing import Any, Mapping

from upt_jax.train.schema_domains import (
    Domain,
    Key,
    anything,
    choice,
    data_path_test,
    flag,
    number,
    open_dict,
    plain,
    regex,
    reward_functions_test,
    streams_test,
    task_tiers,
    text,
    weights_test,
)
from upt_jax.train.schema_hparams import corpus_entries, from_annotation, recipe_hparams, recipe_names


def _model_fields() -> dict[str, Key]:
    """``ModelConfig`` fields a preset's ``overrides`` may set (dtypes come from ``param_dtype``/``dtype``)."""
    from upt_jax.models.config import SUPPORTED_MODEL_TYPES, ModelConfig

    hints = typing.get_type_hints(ModelConfig)
    docs = dict(
        vocab_size="embedding rows (default: the tokenizer's vocabulary)",
        hidden_size="model width",
        intermediate_size="MLP width",
        num_layers="decoder layers",
        num_heads="query heads",
        num_kv_heads="key/value heads (divides num_heads)",
        head_dim="per-head width (even)",
        rms_norm_eps="RMSNorm ε",
        rope_theta="RoPE base",
        rope_scaling="HF rope_scaling params",
        max_position_embeddings="longest position",
        tie_word_embeddings="share embedding and LM head",
        qkv_bias="bias on q/k/v",
        o_bias="bias on the attention output",
        mlp_bias="bias in the MLP",
        qk_norm="RMSNorm on q and k (Qwen3)",
        model_type="architecture family",
        bos_token_id="BOS id (default: the tokenizer's)",
        eos_token_id="EOS id(s) (default: the tokenizer's)",
        pad_token_id="padding id (default: the tokenizer's)",
    )
    out = {}
    for f in dataclasses.fields(ModelConfig):
        if f.name in ("param_dtype", "dtype", "hf_extra"):
            continue
        kind, optional = from_annotation(hints[f.name])
        if f.name == "model_type":
            dom = choice(SUPPORTED_MODEL_TYPES)
        elif f.name == "vocab_size":
            dom = number(int, lo=1, none="the tokenizer's vocabulary")
        elif f.name.endswith("_token_id") and kind is int:
            dom = number(int, lo=0, none="the tokenizer's")
        elif kind is int and not optional:
            dom = number(int, lo=1)
        elif kind is float:
            dom = number(float, lo=0, lo_open=True)
        elif kind is bool:
            dom = flag()
        else:
            dom = anything()
        default = None if f.default is dataclasses.MISSING else f.default
        out[f.name] = Key(f.name, dom, docs.get(f.name, f.name), default)
    return out


def _overrides_entries(section: str):
    """``config.<section>.overrides``' entries, their defaults the preset's (vocabulary and special
    token ids: the tokenizer's)."""

    def entries(config) -> dict[str, Key]:
        from upt_jax.models.config import PRESETS, preset

        name = getattr(getattr(config, section, None), "preset", "tiny")
        cfg = preset(name if name in PRESETS else "tiny", vocab_size=1)
        return {
            k: dataclasses.replace(
                v,
                path=f"{section}.overrides.{k}",
                default=v.default if k == "vocab_size" or k.endswith("_token_id") else getattr(cfg, k),
            )
            for k, v in _model_fields().items()
        }

    return entries


def _fields_entries(config) -> dict[str, Key]:
    from upt_jax.data.readers import FieldMap

    return {
        f.name: Key(
            f"data.fields.{f.name}",
            text(none="the source has no such column"),
            f"the source column of a record's {f.name}",
            f.default,
        )
        for f in dataclasses.fields(FieldMap)
    }


def _hparams_entries(config) -> dict[str, Key]:
    name = config.recipe.name
    return recipe_hparams(name) if name in recipe_names() else {}


def _spec():
    """``(path, domain, doc[, entries])`` of every ``base_config()`` key, in its order."""
    from upt_jax.data.readers import FORMATS
    from upt_jax.data.templates import TEMPLATES
    from upt_jax.models.config import PRESETS
    from upt_jax.models.lora import QUANT_TYPES
    from upt_jax.models.logprobs import REMAT_MODES
    from upt_jax.models.transformer import REMAT_POLICIES
    from upt_jax.rewards.verifiers import KINDS
    from upt_jax.train.state import SCHEDULES

    dtypes = choice(("float32", "bfloat16", "float16"))
    mesh = dict(also=(-1,), also_text="-1 (the devices the other axes leave; at most one axis)")
    tiers = task_tiers()
    return [
        ("name", text(nonempty=True), "the run's name (progress bar, logs)"),
        ("seed", number(int, lo=0), "seeds the model's initialisation, the data order and sampling"),
        ("run_dir", text(nonempty=True), "where checkpoints, metrics.jsonl and config.json go (local or gs://…)"),
        (
            "model.init",
            choice(("preset", "hf", "checkpoint")),
            "the policy's weights: a preset (random), model.hf_dir, or model.checkpoint (a previous run)",
        ),
        ("model.preset", choice(PRESETS), "the architecture of init=preset (shape overrides in model.overrides)"),
        (
            "model.overrides",
            open_dict("ModelConfig fields"),
            "ModelConfig fields over the preset (model.overrides.* below)",
            _overrides_entries("model"),
        ),
        ("model.hf_dir", text(), "init=hf: a Hugging Face checkpoint directory (config.json + safetensors)"),
        ("model.checkpoint", text(), "init=checkpoint: a previous upt_jax run directory (its latest params)"),
        ("model.param_dtype", dtypes, "storage dtype of the weights"),
        ("model.dtype", dtypes, "compute dtype of matmuls and activations"),
        ("model.remat", choice(REMAT_POLICIES), "activation rematerialisation of each layer in the backward pass"),
        ("model.lora.rank", number(int, lo=0), "LoRA adapters' rank r (0: no adapters, every weight is trained)"),
        ("model.lora.alpha", number(float, lo=0, lo_open=True), "LoRA α: the adapters' update is scaled by α / r"),
        ("model.lora.dropout", number(float, lo=0, hi=1, hi_open=True), "dropout on the adapters' input (training)"),
        ("model.lora.targets", regex(), "regex searched in each linear layer's path (layers/3/mlp/up_proj)"),
        ("model.lora.quantize", choice(QUANT_TYPES), "QLoRA: the frozen base kernels stored in int8, int4 or nf4"),
        ("model.lora.block_size", number(int, lo=1), "QLoRA: input rows per quantisation scale"),
        (
            "tokenizer",
            text(nonempty=True),
            "'char' (built-in, 105 tokens) or a local tokenizer directory; must fit the model's vocabulary",
        ),
        (
            "data.source",
            choice(("synthetic", "file", "corpus")),
            "synthetic (built-in arithmetic tiers), file (data.path) or corpus (plain LM text; mode=offline)",
        ),
        ("data.tiers", tiers, "source=synthetic: the tiers trained on"),
        ("data.n_per_tier", number(int, lo=1), "source=synthetic: questions per tier"),
        (
            "data.path",
            Domain(object, "a path, a glob, a dataset directory or a list of them", data_path_test, False, (None, 3)),
            "source=file: the training data",
        ),
        ("data.format", choice(FORMATS), "source=file: the reader (auto: from the file extension)"),
        (
            "data.fields",
            open_dict("record key → source column"),
            "source=file: the source column of each record key (data.fields.* below)",
            _fields_entries,
        ),
        ("data.skip_bad_rows", flag(), "source=file: log, count and skip malformed rows instead of failing"),
        (
            "data.duplicates",
            choice(("keep", "drop", "error")),
            "source=file: rows repeating a question id: keep (counted, logged), drop (all but the first) or error",
        ),
        (
            "data.max_row_chars",
            number(int, lo=1, none="no limit"),
            "source=file: a record whose text fields hold more characters is a bad row",
        ),
        ("data.template", choice(TEMPLATES), "the prompt: plain, zero (zero-shot CoT) or chat (chat template)"),
        ("data.system_prompt", text(none="no system message"), "template=chat: the system message"),
        ("data.verifier", choice(KINDS), "how a rollout's answer is scored (integer: the synthetic task)"),
        ("data.corpus.n_docs", number(int, lo=1), "source=corpus: documents"),
        ("data.corpus.tiers", tiers, "source=corpus: the tiers the documents are drawn from"),
        ("data.corpus.demo_fraction", number(float, lo=0, hi=1), "source=corpus: demonstrations (the rest: facts)"),
        ("data.corpus.facts_per_doc", number(int, lo=1), "source=corpus: facts per fact document"),
        ("data.corpus.options", open_dict("corpus_doc keywords"), "source=corpus: family options", corpus_entries),
        (
            "data.corpus.pack_len",
            number(int, lo=0),
            "source=corpus: > 0 packs consecutive documents into rows of about this many tokens",
        ),
        (
            "recipe.name",
            choice(recipe_names()),
            "the loss (an upt_jax.upge recipe; hpt_released_code = hpt with variant=released_code)",
        ),
        (
            "recipe.hparams",
            open_dict("the recipe's hyper-parameters"),
            "the recipe constructor's keyword arguments (recipe.hparams.* below; unset: its default)",
            _hparams_entries,
        ),
        (
            "mode",
            choice(MODES),
            "online (rollouts), offline (demonstrations), preference (pairs), reward_model, prm, star",
        ),
        ("rollout.n", number(int, lo=1), "rollouts per question (a group)"),
        ("rollout.max_new_tokens", number(int, lo=1), "tokens a rollout generates at most"),
        ("rollout.temperature", number(float, lo=0), "sampling temperature (0: greedy)"),
        (
            "rollout.top_p",
            number(float, lo=0, hi=1, lo_open=True),
            "nucleus sampling: the smallest set of likeliest tokens with this much mass (1: off)",
        ),
        ("rollout.top_k", number(int, lo=0), "sample among the k likeliest tokens (0: off)"),
        ("rollout.train_temperature", number(float, lo=0, lo_open=True, none="sampling τ"), "ablation: trained τ"),
        (
            "rollout.kept_set_replay",
            flag(),
            "with top_k/top_p: train π_θ renormalised over each token's kept set (the policy sampled; "
            "step-0 ratio 1); False: the untruncated π_θ (logged as mismatch/* either way)",
        ),
        (
            "rollout.overlap_chunks",
            number(int, lo=1),
            "> 1: score chunk k while chunk k+1 generates; 1: generate all, then score",
        ),
        (
            "rollout.streams",
            Domain(object, "'auto' or an int ≥ 1", streams_test, False, ("many", 0, None)),
            "the sampler's concurrent row streams (auto: 2 for a small model on a multi-core CPU host, else 1)",
        ),
        ("train.steps", number(int, lo=0), "update steps"),
        ("train.questions_per_step", number(int, lo=1), "questions (offline: rows, preference: pairs) per step"),
        ("train.microbatches", number(int, lo=1), "gradient accumulation: a step's rows in this many micro-batches"),
        ("train.update_epochs", number(int, lo=1), "optimiser updates per step on the same batch (PPO epochs)"),
        ("train.learning_rate", number(float, lo=0, lo_open=True), "AdamW peak learning rate"),
        (
            "train.schedule",
            choice(SCHEDULES),
            "learning rate after warm-up: constant, cosine/linear decay to 0, or wsd (constant, then "
            "train.decay_steps of linear decay to 0)",
        ),
        ("train.warmup_steps", number(int, lo=0), "linear warm-up from 0 over this many updates"),
        ("train.decay_steps", number(int, lo=0), "schedule=wsd: the last steps of train.steps, decaying to 0"),
        ("train.weight_decay", number(float, lo=0), "AdamW decoupled weight decay"),
        (
            "train.max_grad_norm",
            number(float, lo=0, lo_open=True, none="no clipping"),
            "clip the global gradient norm to this",
        ),
        (
            "train.skip_grad_norm",
            number(float, lo=0, lo_open=True, none="never skip"),
            "skip an update whose pre-clip gradient norm exceeds this",
        ),
        (
            "train.skip_update_ratio",
            number(float, lo=0, lo_open=True, none="no bound"),
            "skip (never apply, never save) an update with ‖Δθ‖ > this × ‖θ‖ (a divergence, e.g. lr=1e30)",
        ),
        (
            "train.max_nonfinite_in_a_row",
            number(int, lo=1),
            "stop after this many consecutive diverged updates (non-finite loss, gradient or result, or "
            "over skip_update_ratio)",
        ),
        ("train.dynamic_sampling", flag(), "DAPO: keep drawing questions until every group has reward variance"),
        ("train.dynamic_sampling_max_draws", number(int, lo=1), "dynamic_sampling: draws per step at most"),
        ("train.logprob_chunk", number(int, lo=1), "sequence positions per chunk of the log-prob computation"),
        (
            "train.logprob_remat",
            choice(REMAT_MODES),
            "recompute the [B, T, V] logits in the backward pass: auto (when over 1 GiB), always or never",
        ),
        ("train.pack_sequences", flag(), "pack several sequences per row for the update (segment ids)"),
        (
            "train.share_prompt",
            flag(),
            "run each group's shared prompt through the decoder once in the update (not with pack_sequences)",
        ),
        ("train.eval_every", number(int, lo=0), "evaluate the policy every N steps and after the last (0: never)"),
        ("train.eval_path", text(), "eval_every: the evaluation file ('': synthetic tiers, else the training file)"),
        ("train.eval_n", number(int, lo=1), "eval_every: questions per evaluation suite"),
        ("train.eval_k", number(int, lo=1), "eval_every: samples per question (1: greedy)"),
        (
            "reward.source",
            choice(("verifier", "model")),
            "rollout rewards: the data's verifier, or a trained reward model (reward.model_run_dir)",
        ),
        ("reward.model_run_dir", text(), "source=model: a reward-model run directory (experiments/reward_model.py)"),
        (
            "reward.normalize",
            choice(("none", "batch", "running")),
            "source=model: whiten the scores per step (batch), by running statistics, or not",
        ),
        (
            "reward.functions",
            Domain(
                tuple,
                "a tuple of reward functions: 'module:function' or a built-in name "
                "(math, math_strict, integer, exact, choice, countdown, format); () = data.verifier",
                reward_functions_test,
                False,
                (3, None),
            ),
            "fn(prompts, completions, **columns) -> list[float], summed with reward.weights "
            "(upt_jax.rewards.functions)",
        ),
        (
            "reward.weights",
            Domain(
                tuple,
                "a tuple of finite floats, one per reward.functions entry; () = all 1",
                weights_test,
                False,
                ((math.nan,), None),
            ),
            "the weight of each reward function",
        ),
        ("reward.timeout_s", number(float, lo=0, lo_open=True), "the time limit of one reward-function call"),
        ("reward.prm_run_dir", text(), "a process reward model's run directory (per-step scores: grpo_process)"),
        ("critic.learning_rate", number(float, lo=0, lo_open=True), "PPO's value model: learning rate"),
        ("critic.clip", number(float, lo=0, lo_open=True, none="unclipped"), "PPO's value model: value clip ε"),
        (
            "critic.update_epochs",
            number(int, lo=1, none="train.update_epochs"),
            "PPO's value model: updates per step on the step's returns",
        ),
        ("teacher.run_dir", text(), "distillation: the frozen teacher, a previous upt_jax run directory"),
        ("teacher.hf_dir", text(), "distillation: the frozen teacher, a Hugging Face directory (instead)"),
        ("teacher.param_dtype", dtypes, "the teacher's storage dtype"),
        ("teacher.dtype", dtypes, "the teacher's compute dtype"),
        ("teacher.remat", choice(REMAT_POLICIES), "the teacher's rematerialisation"),
        ("teacher.preset", choice(PRESETS), "the teacher's architecture (a run directory without config.json)"),
        (
            "teacher.overrides",
            open_dict("ModelConfig fields"),
            "the teacher's ModelConfig fields over teacher.preset",
            _overrides_entries("teacher"),
        ),
        ("mesh.data", number(int, lo=1, **mesh), "devices along the data axis"),
        ("mesh.fsdp", number(int, lo=1, **mesh), "devices parameters and optimiser state are sharded over"),
        ("mesh.tensor", number(int, lo=1, **mesh), "tensor-parallel devices"),
        (
            "compile_cache",
            text(),
            "XLA's persistent compilation cache: auto ($UPT_JAX_COMPILE_CACHE, else "
            "~/.cache/upt_jax/xla), a directory, or off",
        ),
        ("checkpoint.every", number(int, lo=0), "save every this many steps and at the last (0: at the last only)"),
        ("checkpoint.keep", number(int, lo=1), "newest checkpoints kept"),
        ("checkpoint.async_save", flag(), "write checkpoints in the background"),
        (
            "checkpoint.preemption_grace_s",
            number(float, lo=0, lo_open=True),
            "after SIGTERM/SIGINT: seconds for the current step and its checkpoint before exiting without "
            "that save (set it below the scheduler's kill delay: SLURM KillWait, Kubernetes grace)",
        ),
        ("log.every", number(int, lo=1), "(not read: every step is logged)"),
        ("log.tensorboard", flag(), "also write TensorBoard event files (tensorboardX)"),
        ("log.progress", flag(), "show a progress bar"),
        ("log.completions", flag(), "online: write every rollout to <run_dir>/completions.jsonl"),
        ("log.show_completions", number(int, lo=0), "log two of the step's completions every N steps (0: never)"),
    ]


MODES = ("online", "offline", "preference", "reward_model", "prm", "star")

# optional sections: the modes whose configs hold (and need) them
SECTIONS = {
    "reward_model": ("reward_model", "prm"),
    "star": ("star",),
}


def _section_spec():
    """``(path, domain, doc, default)`` of the optional sections' keys (defaults: the experiments')."""
    return [
        ("reward_model.margin", number(float, lo=0), "Bradley–Terry: the margin the chosen score must clear", 0.0),
        (
            "reward_model.label_smoothing",
            number(float, lo=0, hi=0.5, hi_open=True),
            "Bradley–Terry: the assumed fraction of flipped labels",
            0.0,
        ),
        ("reward_model.eval_every", number(int, lo=1), "held-out pair accuracy every this many steps", 10),
        ("reward_model.eval_pairs", number(int, lo=1), "held-out pairs (or PRM demonstrations) evaluated", 64),
        ("star.rounds", number(int, lo=1), "sample → keep correct → rationalise → SFT rounds", 2),
        ("star.questions", number(int, lo=1), "questions sampled per round", 128),
        ("star.rationalise", flag(), "retry failed questions with the answer as a hint", True),
    ]


def flatten(d, prefix="", open_keys=None) -> dict[str, Any]:
    """``{dotted path: value}`` of a nested ``ConfigDict``/dict (the ``open_keys`` dicts kept whole;
    default `OPEN_KEYS`, ``()`` to flatten them too)."""
    open_keys = OPEN_KEYS if open_keys is None else open_keys
    out = {}
    for k, v in d.items() if hasattr(d, "items") else ():
        path = f"{prefix}{k}"
        if path in open_keys or not (isinstance(v, Mapping) or hasattr(v, "to_dict")):
            out[path] = v
        else:
            out.update(flatten(v, path + ".", open_keys))
    return out


OPEN_KEYS = ("model.overrides", "data.fields", "data.corpus.options", "recipe.hparams", "teacher.overrides")


@functools.lru_cache(maxsize=None)
def _keys() -> tuple[Key, ...]:
    from upt_jax.train.config import base_config

    defaults = flatten(base_config())
    out = []
    for path, dom, doc, *entries in _spec():
        out.append(Key(path, dom, doc, plain(defaults[path]), entries[0] if entries else None))
    for path, dom, doc, default in _section_spec():
        out.append(Key(path, dom, doc, default, section=path.split(".")[0]))
    return tuple(out)


def keys() -> dict[str, Key]:
    """Every key, ``{path: Key}``, in ``base_config()``'s order, then the mode sections."""
    return {k.path: k for k in _keys()}
