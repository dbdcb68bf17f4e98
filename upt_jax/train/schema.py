"""The experiment config's schema: one table of every key — its type, allowed values, default
and a one-line doc — read by the command line (overrides, ``upt train --config F --help``) and
by validation, so the three cannot disagree.

    from upt_jax.train import schema
    schema.validate(config)             # every key in its domain; before anything is read or built
    print(schema.describe(config))      # what ``upt train --config grpo --help`` prints
    schema.recipe_hparams("grpo")       # {"eps": Key(...), "kl_coef": Key(...), ...}

`keys()` covers every key of ``base_config()`` (defaults are read from it, so they cannot drift;
``tests/train/test_schema.py`` checks both name the same keys) and the sections that some modes
add (``reward_model.*`` for ``mode=reward_model|prm``, ``star.*`` for ``mode=star``). Four keys
are open dicts whose entries come from the code they configure: ``recipe.hparams`` (the
configured recipe constructor's keyword arguments, from its signature), ``model.overrides`` and
``teacher.overrides`` (``ModelConfig`` fields) and ``data.fields`` (``FieldMap`` columns).
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import math
import numbers
import os
import types
import typing
from typing import Any, Callable, Mapping


class ConfigError(ValueError):
    """A config value outside its key's domain; the message names the ``config.`` key."""


# ----------------------------------------------------------------------------- domains
@dataclasses.dataclass(frozen=True)
class Domain:
    """The allowed values of a key.

    Attributes:
      type: what a command-line string parses to (``float``, ``int``, ``str``, ``bool``, or
        ``object`` for a Python literal).
      allowed: the text every message and ``--help`` show (``"a finite float > 0"``).
      test: ``value -> bool`` for a non-None value.
      optional: ``None`` is allowed (its meaning is in ``allowed``).
      outside: example values outside the domain (the schema test walks them).
    """

    type: Any
    allowed: str
    test: Callable[[Any], bool]
    optional: bool = False
    outside: tuple = ()

    def __contains__(self, value) -> bool:
        if value is None:
            return self.optional
        try:
            return bool(self.test(value))
        except (TypeError, ValueError):
            return False


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def number(kind=float, *, lo=None, hi=None, lo_open=False, hi_open=False, none: str = "",
           also: tuple = (), also_text: str = "") -> Domain:
    """Finite numbers of ``kind`` (``int``: integers only) within the bounds; ``none``: ``None``
    is allowed and means this; ``also``: extra allowed values (e.g. ``-1``), described by ``also_text``."""
    if lo is not None and hi is not None:
        bounds = f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    elif lo is not None:
        bounds = f" {'>' if lo_open else '≥'} {lo}"
    elif hi is not None:
        bounds = f" {'<' if hi_open else '≤'} {hi}"
    else:
        bounds = ""
    allowed = ("an int" if kind is int else "a finite float") + bounds
    allowed += f", or {also_text}" if also_text else ""
    allowed += f", or None ({none})" if none else ""

    def test(v):
        if v in also and _is_int(v) == _is_int(also[0]):
            return True
        if not (_is_int(v) if kind is int else _is_real(v)) or not math.isfinite(v):
            return False
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return hi is None or (v < hi if hi_open else v <= hi)

    outside = []
    if lo is not None:
        outside.append(lo if lo_open else lo - 1)
    if hi is not None:
        outside.append(hi if hi_open else hi + 1)
    if kind is float:
        outside += [math.nan, math.inf]
    if not none:
        outside.append(None)
    outside = [v for v in outside if v not in also]
    return Domain(kind, allowed, test, bool(none), tuple(outside))


def choice(values, *, none: str = "") -> Domain:
    """One of ``values`` (strings)."""
    values = tuple(values)
    allowed = "one of " + ", ".join(map(str, values)) + (f", or None ({none})" if none else "")
    return Domain(str, allowed, lambda v: v in values, bool(none), ("no_such_" + str(values[0]),)
                  + (() if none else (None,)))


def text(*, nonempty: bool = False, none: str = "") -> Domain:
    """A string (``nonempty``: not blank)."""
    allowed = ("a non-empty string" if nonempty else "a string") + (f", or None ({none})" if none else "")
    outside = ((" ",) if nonempty else ()) + (() if none else (None,))
    return Domain(str, allowed, lambda v: isinstance(v, str) and (not nonempty or bool(v.strip())),
                  bool(none), outside)


def _regex() -> Domain:
    """A non-empty string that compiles as a Python regex."""
    import re

    def test(v):
        if not isinstance(v, str) or not v.strip():
            return False
        try:
            return re.compile(v) is not None
        except re.error:
            return False

    return Domain(str, "a non-empty Python regex", test, False, (" ", "(", None))


def flag() -> Domain:
    return Domain(bool, "True or False", lambda v: isinstance(v, bool), False, (None, "yes"))


def names(valid, what: str) -> Domain:
    """A non-empty tuple (or list) of names from ``valid``."""
    valid = tuple(valid)
    return Domain(tuple, f"a non-empty tuple of {what}: " + ", ".join(valid),
                  lambda v: isinstance(v, (tuple, list)) and len(v) > 0 and all(x in valid for x in v),
                  False, ((), ("no_such_tier",), None))


def task_tiers() -> Domain:
    """A non-empty tuple of registered task tiers (`upt_jax.data.tasks`: any family's tier names, or
    ``module:tier``, which imports a user's task module)."""
    from upt_jax.data import tasks

    def known(t) -> bool:
        try:
            tasks.resolve_tier(t)
            return True
        except (KeyError, TypeError):
            return False

    return Domain(tuple, "a non-empty tuple of task tiers (upt_jax.data.tasks; 'module:tier' imports a user's "
                         "task module): " + ", ".join(tasks.tier_names()),
                  lambda v: isinstance(v, (tuple, list)) and len(v) > 0 and all(known(x) for x in v),
                  False, ((), ("no_such_tier",), None))


def anything(kind=object, allowed: str = "any value") -> Domain:
    return Domain(kind, allowed, lambda v: True, True, ())


def _data_path_test(v) -> bool:
    if isinstance(v, (str, os.PathLike)):
        return True
    return isinstance(v, (tuple, list)) and all(isinstance(p, (str, os.PathLike)) for p in v)


def _reward_functions_test(v) -> bool:
    return isinstance(v, (tuple, list)) and all(isinstance(f, str) and f.strip() for f in v)


def _weights_test(v) -> bool:
    return isinstance(v, (tuple, list)) and all(_is_real(w) and math.isfinite(w) for w in v)


def _streams_test(v) -> bool:
    if isinstance(v, str):
        return v == "auto" or (v.isdigit() and int(v) >= 1)
    return _is_int(v) and v >= 1


def _open(what: str) -> Domain:
    """An open dict: a mapping (its entries are checked against ``Key.entries``)."""
    return Domain(dict, f"a dict of {what}", lambda v: isinstance(v, Mapping) or hasattr(v, "to_dict"),
                  False, ({"no_such_key": 1},))


# ----------------------------------------------------------------------------- keys
@dataclasses.dataclass(frozen=True)
class Key:
    """One config key.

    Attributes:
      path: dotted, relative to the experiment config (``"train.learning_rate"``,
        ``"recipe.hparams.kl_coef"``).
      domain: its type and allowed values.
      doc: one line.
      default: ``base_config()``'s value (a section key: the value its experiments use).
      entries: open dicts only: ``config -> {name: Key}``, the entries this config may set.
      section: the key belongs to an optional section (``reward_model``, ``star``), present
        only in configs of the modes that read it.
      only_with: a recipe hyper-parameter read only with this ``gate`` (HPT's gate keywords).
    """

    path: str
    domain: Domain
    doc: str
    default: Any = None
    entries: Callable[[Any], dict] | None = None
    section: str = ""
    only_with: str = ""

    @property
    def type(self) -> str:
        t = self.domain.type
        name = {float: "float", int: "int", str: "str", bool: "bool", tuple: "tuple", dict: "dict"}.get(t, "literal")
        return name + (" | None" if self.domain.optional and t is not object else "")

    def check(self, value, prefix: str = "config.") -> None:
        """Raises ``ConfigError`` naming ``prefix + path`` when ``value`` is outside the domain."""
        if value not in self.domain:
            raise ConfigError(f"{prefix}{self.path}={value!r}: must be {self.domain.allowed} ({self.doc})")


def _model_fields() -> dict[str, Key]:
    """``ModelConfig`` fields a preset's ``overrides`` may set (dtypes come from ``param_dtype``/``dtype``)."""
    from upt_jax.models.config import SUPPORTED_MODEL_TYPES, ModelConfig

    hints = typing.get_type_hints(ModelConfig)
    docs = dict(vocab_size="embedding rows (default: the tokenizer's vocabulary)", hidden_size="model width",
                intermediate_size="MLP width", num_layers="decoder layers", num_heads="query heads",
                num_kv_heads="key/value heads (divides num_heads)", head_dim="per-head width (even)",
                rms_norm_eps="RMSNorm ε", rope_theta="RoPE base", rope_scaling="HF rope_scaling params",
                max_position_embeddings="longest position", tie_word_embeddings="share embedding and LM head",
                qkv_bias="bias on q/k/v", o_bias="bias on the attention output", mlp_bias="bias in the MLP",
                qk_norm="RMSNorm on q and k (Qwen3)", model_type="architecture family",
                bos_token_id="BOS id (default: the tokenizer's)", eos_token_id="EOS id(s) (default: the tokenizer's)",
                pad_token_id="padding id (default: the tokenizer's)")
    out = {}
    for f in dataclasses.fields(ModelConfig):
        if f.name in ("param_dtype", "dtype", "hf_extra"):
            continue
        kind, optional = _from_annotation(hints[f.name])
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
        return {k: dataclasses.replace(v, path=f"{section}.overrides.{k}", default=v.default if k == "vocab_size"
                                       or k.endswith("_token_id") else getattr(cfg, k))
                for k, v in _model_fields().items()}
    return entries


def _fields_entries(config) -> dict[str, Key]:
    from upt_jax.data.readers import FieldMap

    return {f.name: Key(f"data.fields.{f.name}", text(none="the source has no such column"),
                        f"the source column of a record's {f.name}", f.default)
            for f in dataclasses.fields(FieldMap)}


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
        ("model.init", choice(("preset", "hf", "checkpoint")),
         "the policy's weights: a preset (random), model.hf_dir, or model.checkpoint (a previous run)"),
        ("model.preset", choice(PRESETS), "the architecture of init=preset (shape overrides in model.overrides)"),
        ("model.overrides", _open("ModelConfig fields"),
         "ModelConfig fields over the preset (model.overrides.* below)", _overrides_entries("model")),
        ("model.hf_dir", text(), "init=hf: a Hugging Face checkpoint directory (config.json + safetensors)"),
        ("model.checkpoint", text(), "init=checkpoint: a previous upt_jax run directory (its latest params)"),
        ("model.param_dtype", dtypes, "storage dtype of the weights"),
        ("model.dtype", dtypes, "compute dtype of matmuls and activations"),
        ("model.remat", choice(REMAT_POLICIES), "activation rematerialisation of each layer in the backward pass"),
        ("model.lora.rank", number(int, lo=0), "LoRA adapters' rank r (0: no adapters, every weight is trained)"),
        ("model.lora.alpha", number(float, lo=0, lo_open=True), "LoRA α: the adapters' update is scaled by α / r"),
        ("model.lora.dropout", number(float, lo=0, hi=1, hi_open=True), "dropout on the adapters' input (training)"),
        ("model.lora.targets", _regex(), "regex searched in each linear layer's path (layers/3/mlp/up_proj)"),
        ("model.lora.quantize", choice(QUANT_TYPES), "QLoRA: the frozen base kernels stored in int8, int4 or nf4"),
        ("model.lora.block_size", number(int, lo=1), "QLoRA: input rows per quantisation scale"),
        ("tokenizer", text(nonempty=True),
         "'char' (built-in, 105 tokens) or a local tokenizer directory; must fit the model's vocabulary"),
        ("data.source", choice(("synthetic", "file", "corpus")),
         "synthetic (built-in arithmetic tiers), file (data.path) or corpus (plain LM text; mode=offline)"),
        ("data.tiers", tiers, "source=synthetic: the tiers trained on"),
        ("data.n_per_tier", number(int, lo=1), "source=synthetic: questions per tier"),
        ("data.path", Domain(object, "a path, a glob, a dataset directory or a list of them", _data_path_test,
                             False, (None, 3)), "source=file: the training data"),
        ("data.format", choice(FORMATS), "source=file: the reader (auto: from the file extension)"),
        ("data.fields", _open("record key → source column"),
         "source=file: the source column of each record key (data.fields.* below)", _fields_entries),
        ("data.skip_bad_rows", flag(), "source=file: log, count and skip malformed rows instead of failing"),
        ("data.duplicates", choice(("keep", "drop", "error")),
         "source=file: rows repeating a question id: keep (counted, logged), drop (all but the first) or error"),
        ("data.max_row_chars", number(int, lo=1, none="no limit"),
         "source=file: a record whose text fields hold more characters is a bad row"),
        ("data.template", choice(TEMPLATES), "the prompt: plain, zero (zero-shot CoT) or chat (chat template)"),
        ("data.system_prompt", text(none="no system message"), "template=chat: the system message"),
        ("data.verifier", choice(KINDS), "how a rollout's answer is scored (integer: the synthetic task)"),
        ("data.corpus.n_docs", number(int, lo=1), "source=corpus: documents"),
        ("data.corpus.tiers", tiers, "source=corpus: the tiers the documents are drawn from"),
        ("data.corpus.demo_fraction", number(float, lo=0, hi=1), "source=corpus: demonstrations (the rest: facts)"),
        ("data.corpus.facts_per_doc", number(int, lo=1), "source=corpus: facts per fact document"),
        ("data.corpus.pack_len", number(int, lo=0),
         "source=corpus: > 0 packs consecutive documents into rows of about this many tokens"),
        ("recipe.name", choice(recipe_names()),
         "the loss (an upt_jax.upge recipe; hpt_released_code = hpt with variant=released_code)"),
        ("recipe.hparams", _open("the recipe's hyper-parameters"),
         "the recipe constructor's keyword arguments (recipe.hparams.* below; unset: its default)",
         _hparams_entries),
        ("mode", choice(MODES), "online (rollouts), offline (demonstrations), preference (pairs), "
                                "reward_model, prm, star"),
        ("rollout.n", number(int, lo=1), "rollouts per question (a group)"),
        ("rollout.max_new_tokens", number(int, lo=1), "tokens a rollout generates at most"),
        ("rollout.temperature", number(float, lo=0), "sampling temperature (0: greedy)"),
        ("rollout.top_p", number(float, lo=0, hi=1, lo_open=True),
         "nucleus sampling: the smallest set of likeliest tokens with this much mass (1: off)"),
        ("rollout.top_k", number(int, lo=0), "sample among the k likeliest tokens (0: off)"),
        ("rollout.kept_set_replay", flag(),
         "with top_k/top_p: train π_θ renormalised over each token's kept set (the policy sampled; "
         "step-0 ratio 1); False: the untruncated π_θ (logged as mismatch/* either way)"),
        ("rollout.overlap_chunks", number(int, lo=1),
         "> 1: score chunk k while chunk k+1 generates; 1: generate all, then score"),
        ("rollout.streams", Domain(object, "'auto' or an int ≥ 1", _streams_test, False, ("many", 0, None)),
         "the sampler's concurrent row streams (auto: 2 for a small model on a multi-core CPU host, else 1)"),
        ("train.steps", number(int, lo=0), "update steps"),
        ("train.questions_per_step", number(int, lo=1), "questions (offline: rows, preference: pairs) per step"),
        ("train.microbatches", number(int, lo=1), "gradient accumulation: a step's rows in this many micro-batches"),
        ("train.update_epochs", number(int, lo=1), "optimiser updates per step on the same batch (PPO epochs)"),
        ("train.learning_rate", number(float, lo=0, lo_open=True), "AdamW peak learning rate"),
        ("train.schedule", choice(SCHEDULES),
         "learning rate after warm-up: constant, cosine/linear decay to 0, or wsd (constant, then "
         "train.decay_steps of linear decay to 0)"),
        ("train.warmup_steps", number(int, lo=0), "linear warm-up from 0 over this many updates"),
        ("train.decay_steps", number(int, lo=0), "schedule=wsd: the last steps of train.steps, decaying to 0"),
        ("train.weight_decay", number(float, lo=0), "AdamW decoupled weight decay"),
        ("train.max_grad_norm", number(float, lo=0, lo_open=True, none="no clipping"),
         "clip the global gradient norm to this"),
        ("train.skip_grad_norm", number(float, lo=0, lo_open=True, none="never skip"),
         "skip an update whose pre-clip gradient norm exceeds this"),
        ("train.skip_update_ratio", number(float, lo=0, lo_open=True, none="no bound"),
         "skip (never apply, never save) an update with ‖Δθ‖ > this × ‖θ‖ (a divergence, e.g. lr=1e30)"),
        ("train.max_nonfinite_in_a_row", number(int, lo=1),
         "stop after this many consecutive diverged updates (non-finite loss, gradient or result, or "
         "over skip_update_ratio)"),
        ("train.dynamic_sampling", flag(), "DAPO: keep drawing questions until every group has reward variance"),
        ("train.dynamic_sampling_max_draws", number(int, lo=1), "dynamic_sampling: draws per step at most"),
        ("train.logprob_chunk", number(int, lo=1), "sequence positions per chunk of the log-prob computation"),
        ("train.logprob_remat", choice(REMAT_MODES),
         "recompute the [B, T, V] logits in the backward pass: auto (when over 1 GiB), always or never"),
        ("train.pack_sequences", flag(), "pack several sequences per row for the update (segment ids)"),
        ("train.eval_every", number(int, lo=0), "evaluate the policy every N steps and after the last (0: never)"),
        ("train.eval_path", text(), "eval_every: the evaluation file ('': synthetic tiers, else the training file)"),
        ("train.eval_n", number(int, lo=1), "eval_every: questions per evaluation suite"),
        ("train.eval_k", number(int, lo=1), "eval_every: samples per question (1: greedy)"),
        ("reward.source", choice(("verifier", "model")),
         "rollout rewards: the data's verifier, or a trained reward model (reward.model_run_dir)"),
        ("reward.model_run_dir", text(), "source=model: a reward-model run directory (experiments/reward_model.py)"),
        ("reward.normalize", choice(("none", "batch", "running")),
         "source=model: whiten the scores per step (batch), by running statistics, or not"),
        ("reward.functions", Domain(tuple, "a tuple of reward functions: 'module:function' or a built-in name "
                                           "(math, math_strict, integer, exact, choice, format); () = data.verifier",
                                    _reward_functions_test, False, (3, None)),
         "fn(prompts, completions, **columns) -> list[float], summed with reward.weights "
         "(upt_jax.rewards.functions)"),
        ("reward.weights", Domain(tuple, "a tuple of finite floats, one per reward.functions entry; () = all 1",
                                  _weights_test, False, ((math.nan,), None)),
         "the weight of each reward function"),
        ("reward.timeout_s", number(float, lo=0, lo_open=True), "the time limit of one reward-function call"),
        ("reward.prm_run_dir", text(), "a process reward model's run directory (per-step scores: grpo_process)"),
        ("critic.learning_rate", number(float, lo=0, lo_open=True), "PPO's value model: learning rate"),
        ("critic.clip", number(float, lo=0, lo_open=True, none="unclipped"), "PPO's value model: value clip ε"),
        ("teacher.run_dir", text(), "distillation: the frozen teacher, a previous upt_jax run directory"),
        ("teacher.hf_dir", text(), "distillation: the frozen teacher, a Hugging Face directory (instead)"),
        ("teacher.param_dtype", dtypes, "the teacher's storage dtype"),
        ("teacher.dtype", dtypes, "the teacher's compute dtype"),
        ("teacher.remat", choice(REMAT_POLICIES), "the teacher's rematerialisation"),
        ("teacher.preset", choice(PRESETS), "the teacher's architecture (a run directory without config.json)"),
        ("teacher.overrides", _open("ModelConfig fields"),
         "the teacher's ModelConfig fields over teacher.preset", _overrides_entries("teacher")),
        ("mesh.data", number(int, lo=1, **mesh), "devices along the data axis"),
        ("mesh.fsdp", number(int, lo=1, **mesh), "devices parameters and optimiser state are sharded over"),
        ("mesh.tensor", number(int, lo=1, **mesh), "tensor-parallel devices"),
        ("compile_cache", text(), "XLA's persistent compilation cache: auto ($UPT_JAX_COMPILE_CACHE, else "
         "~/.cache/upt_jax/xla), a directory, or off"),
        ("checkpoint.every", number(int, lo=0), "save every this many steps and at the last (0: at the last only)"),
        ("checkpoint.keep", number(int, lo=1), "newest checkpoints kept"),
        ("checkpoint.async_save", flag(), "write checkpoints in the background"),
        ("checkpoint.preemption_grace_s", number(float, lo=0, lo_open=True),
         "after SIGTERM/SIGINT: seconds for the current step and its checkpoint before exiting without "
         "that save (set it below the scheduler's kill delay: SLURM KillWait, Kubernetes grace)"),
        ("log.every", number(int, lo=1), "(not read: every step is logged)"),
        ("log.tensorboard", flag(), "also write TensorBoard event files (tensorboardX)"),
        ("log.progress", flag(), "show a progress bar"),
        ("log.completions", flag(), "online: write every rollout to <run_dir>/completions.jsonl"),
        ("log.show_completions", number(int, lo=0), "log two of the step's completions every N steps (0: never)"),
    ]


MODES = ("online", "offline", "preference", "reward_model", "prm", "star")

# optional sections: the modes whose configs hold (and need) them
_SECTIONS = {
    "reward_model": ("reward_model", "prm"),
    "star": ("star",),
}


def _section_spec():
    """``(path, domain, doc, default)`` of the optional sections' keys (defaults: the experiments')."""
    return [
        ("reward_model.margin", number(float, lo=0), "Bradley–Terry: the margin the chosen score must clear", 0.0),
        ("reward_model.label_smoothing", number(float, lo=0, hi=0.5, hi_open=True),
         "Bradley–Terry: the assumed fraction of flipped labels", 0.0),
        ("reward_model.eval_every", number(int, lo=1), "held-out pair accuracy every this many steps", 10),
        ("reward_model.eval_pairs", number(int, lo=1), "held-out pairs (or PRM demonstrations) evaluated", 64),
        ("star.rounds", number(int, lo=1), "sample → keep correct → rationalise → SFT rounds", 2),
        ("star.questions", number(int, lo=1), "questions sampled per round", 128),
        ("star.rationalise", flag(), "retry failed questions with the answer as a hint", True),
    ]


def _flatten(d, prefix="") -> dict[str, Any]:
    """``{dotted path: value}`` of a nested ``ConfigDict``/dict (open dicts kept whole)."""
    out = {}
    for k, v in (d.items() if hasattr(d, "items") else ()):
        path = f"{prefix}{k}"
        if path in OPEN_KEYS or not (isinstance(v, Mapping) or hasattr(v, "to_dict")):
            out[path] = v
        else:
            out.update(_flatten(v, path + "."))
    return out


OPEN_KEYS = ("model.overrides", "data.fields", "recipe.hparams", "teacher.overrides")


@functools.lru_cache(maxsize=None)
def _keys() -> tuple[Key, ...]:
    from upt_jax.train.config import base_config

    defaults = _flatten(base_config())
    out = []
    for path, dom, doc, *entries in _spec():
        out.append(Key(path, dom, doc, _plain(defaults[path]), entries[0] if entries else None))
    for path, dom, doc, default in _section_spec():
        out.append(Key(path, dom, doc, default, section=path.split(".")[0]))
    return tuple(out)


def keys() -> dict[str, Key]:
    """Every key, ``{path: Key}``, in ``base_config()``'s order, then the mode sections."""
    return {k.path: k for k in _keys()}


def _plain(v):
    return v.to_dict() if hasattr(v, "to_dict") else v


# ----------------------------------------------------------------------------- recipe hyper-parameters
# domain and doc of each hyper-parameter, by name; (recipe, name) where a recipe means something else
_NONNEG = dict(lo=0)
_POS = dict(lo=0, lo_open=True)
_HPARAMS: dict = {
    "eps": (number(float, **_POS), "PPO clip ε: the ratio is clipped to [1 − ε, 1 + ε]"),
    "eps_low": (number(float, **_POS), "clip ε below: the ratio is clipped at 1 − eps_low"),
    "eps_high": (number(float, **_POS), "clip ε above (clip-higher): the ratio is clipped at 1 + eps_high"),
    "kl_coef": (number(float, **_NONNEG), "β of the KL to the frozen reference (0: no KL, no reference model)"),
    "kl_kind": (None, "the KL estimator"),  # filled from upge.KL_ESTIMATORS
    "std_eps": (number(float, **_POS), "ε added to the group's reward std"),
    "max_len": (number(int, lo=1, none="the padded length T"), "the constant L of the token-sum / L aggregation"),
    "dynamic_sampling": (flag(), "drop groups whose rewards are all equal (from sum and denominator)"),
    "baseline": (flag(), "REINFORCE++-baseline (r − group mean, whitened); False: plain REINFORCE++ with k1 KL"),
    "dual_clip_c": (number(float, lo=1, lo_open=True, none="ordinary PPO clip"), "dual-clip PPO's c > 1"),
    "gamma": (number(float, lo=0, hi=1), "GAE discount γ"),
    "lam": (number(float, lo=0, hi=1), "GAE λ"),
    "threshold": (number(float), "a rollout is correct when its reward exceeds this"),
    "beta": (number(float, **_POS), "β: the scale of the implicit reward log π/π_ref"),
    "label_smoothing": (number(float, lo=0, hi=0.5, hi_open=True), "the assumed fraction of flipped preferences"),
    "temperature": (number(float, **_POS), "the teacher's softmax temperature"),
    "top_k": (number(int, lo=1, none="the whole vocabulary"),
              "keep the teacher's k likeliest entries per position (renormalised)"),
    "shaping_gamma": (number(float, **_POS), "policy shaping f(π) = π / (π + γ) on demonstration tokens"),
    "sft_coef": (number(float, **_NONNEG), "weight of the demonstration NLL: sft_coef · exp(−H̄)"),
    "sft_loss_coef": (number(float, **_NONNEG),
                      "HPT: weight of the SFT term (token mean over routed demonstrations), as the released "
                      "code's sft_loss_coef"),
    "rl_coef": (number(float, **_NONNEG), "weight of positive self-rollouts: rl_coef · exp(+H̄)"),
    "std_ddof": (number(int, lo=0, hi=1),
                 "degrees of freedom of the group reward std: 0 population (the papers), 1 Bessel (torch.std, TRL)"),
    "tau_pos": (number(float, **_POS), "SAPO: soft-gate temperature τ for positive advantages"),
    "tau_neg": (number(float, **_POS), "SAPO: soft-gate temperature τ for negative advantages (> tau_pos: faster decay)"),
    "ratio": (number(float, lo=0, hi=1, lo_open=True), "fraction r of the batch's tokens selected by covariance"),
    "cov_low": (number(float), "Clip-Cov: candidates have covariance above this (ω_low)"),
    "cov_high": (number(float), "Clip-Cov: candidates have covariance below this (ω_high)"),
    "seed": (number(int, lo=0), "Clip-Cov: seed of the random draw among the candidates"),
    "ppo_kl_coef": (number(float, **_NONNEG), "KL-Cov: β of |log π − log π_old| on the selected tokens"),
    "delta_low": (number(float, **_POS), "DPPO: divergence threshold δ for negative advantages"),
    "delta_high": (number(float, **_POS), "DPPO: divergence threshold δ for positive advantages"),
    "is_cap": (number(float, lo=1, none="no truncation"), "DPPO: truncation C of the importance weight min(r, C)"),
    "scale_by_std": (flag(), "GPG: divide the advantage by the group std + std_eps (F_norm); False: F_norm = 1"),
    ("opd_pg", "alpha"): (number(float, **_NONNEG), "weight α of the outcome advantage added to the distillation reward"),
    "desirable_weight": (number(float, **_POS), "KTO: λ_D, weight of desirable rows"),
    "undesirable_weight": (number(float, **_POS), "KTO: λ_U, weight of undesirable rows"),
    ("clip_cov", "eps"): (number(float, **_POS, none="no PPO clip (the paper)"), "PPO clip ε on top of Clip-Cov"),
    ("gmpo", "eps_low"): (number(float, **_POS), "GMPO: the token log-ratio is clipped at −eps_low (log space)"),
    ("gmpo", "eps_high"): (number(float, **_POS), "GMPO: the token log-ratio is clipped at +eps_high (log space)"),
    ("simpo", "gamma"): (number(float), "SimPO's target reward margin γ"),
    ("simpo", "beta"): (number(float, **_POS), "SimPO's reward scale β"),
    ("orpo", "lam"): (number(float, **_NONNEG), "λ: weight of the odds-ratio term"),
    ("hpt", "variant"): (choice(("paper_text", "released_code")),
                         "paper_text (Eq. 11) or released_code (as the authors' script ran)"),
    ("hpt", "gamma"): (number(float), "gate threshold γ: P > γ → RL, else SFT (0 ≤ γ < 1; gate hard/soft)"),
    ("hpt", "gate"): (None, "how the pass rate P routes a question"),  # filled from the gates
    ("hpt", "offline"): (choice(("sft", "rl", "both")),
                         "paper_text: what an SFT-routed question learns from its demonstration"),
    ("hpt", "max_len"): (number(int, lo=1, none="the padded length T"), "released_code: the L of token-sum / L"),
    ("hpt", "threshold"): (number(float), "a rollout counts as passed when its reward exceeds this"),
    ("hpt", "temperature"): (number(float, **_POS), "gate=soft: α = σ((P − γ) / temperature)"),
    ("hpt", "alpha"): (number(float), "gate=mix: the constant RL weight α"),
    ("hpt", "beta"): (number(float), "gate=mix: the constant SFT weight β"),
}
# HPT's **gate_kwargs: (name, default, the gate it applies to or None for every gate)
_HPT_GATE_KWARGS = (("threshold", 0.5, None), ("temperature", 0.1, "soft"), ("alpha", 1.0, "mix"),
                    ("beta", 1.0, "mix"))


def recipe_names() -> tuple[str, ...]:
    """Every ``config.recipe.name``: the keys of ``upge.RECIPES`` and HPT's two variant names."""
    from upt_jax import upge

    return tuple(upge.RECIPES) + ("hpt_paper_text", "hpt_released_code")


def _from_annotation(ann) -> tuple[Any, bool]:
    """``(type, optional)`` of an annotation: ``float``, ``int | None`` → ``(int, True)``, else object."""
    args = typing.get_args(ann) if isinstance(ann, types.UnionType) or typing.get_origin(ann) is typing.Union \
        else (ann,)
    optional = type(None) in args
    rest = [a for a in args if a is not type(None)]
    if len(rest) == 1 and rest[0] in (float, int, str, bool):
        return rest[0], optional
    return object, optional


@functools.lru_cache(maxsize=None)
def _recipe_hparams(name: str) -> tuple[Key, ...]:
    from upt_jax import upge
    from upt_jax.upge._gates import GATES

    base = "hpt" if name.startswith("hpt_") else name
    fn = upge.RECIPES[base]
    out = []
    for p in inspect.signature(fn, eval_str=True).parameters.values():
        if p.kind is p.VAR_KEYWORD or (base != name and p.name == "variant"):
            continue
        dom, doc = _HPARAMS.get((base, p.name)) or _HPARAMS.get(p.name) or (None, "")
        if p.name == "kl_kind":
            dom = choice(upge.KL_ESTIMATORS)
        elif (base, p.name) == ("hpt", "gate"):
            dom = choice(GATES)
        if dom is None:  # not in the table: any value of its annotation (tests/train/test_schema.py wants one)
            dom = anything(_from_annotation(p.annotation)[0])
        out.append(Key(f"recipe.hparams.{p.name}", dom, doc, p.default))
    if base == "hpt":
        for kw, default, gate in _HPT_GATE_KWARGS:
            dom, doc = _HPARAMS[("hpt", kw)]
            out.append(Key(f"recipe.hparams.{kw}", dom, doc, default, only_with=gate or ""))
    return tuple(out)


def recipe_hparams(name: str) -> dict[str, Key]:
    """``{hyper-parameter: Key}`` of recipe ``name`` (``config.recipe.name``): the keyword
    arguments of its ``upge`` constructor with their defaults (``hpt_<variant>``: ``hpt`` without
    ``variant``; HPT's gate keyword arguments included, ``Key.section`` naming their gate)."""
    if name not in recipe_names():
        raise ConfigError(f"config.recipe.name={name!r}: must be one of {', '.join(recipe_names())}")
    return {k.path.rsplit(".", 1)[1]: k for k in _recipe_hparams(name)}


def _check_hparams(config, prefix: str) -> None:
    """``recipe.hparams``: known names for the configured recipe, values in their domains, HPT's
    gate keywords only with their gate, and the recipe builds."""
    from upt_jax import upge

    name = config.recipe.name
    hp = _plain(config.recipe.hparams) or {}
    known = recipe_hparams(name)
    for k, v in hp.items():
        if k not in known:
            raise ConfigError(f"{prefix}recipe.hparams.{k}: recipe {name!r} has no such hyper-parameter; "
                              f"its hyper-parameters: {', '.join(known) or 'none'}")
        known[k].check(v, prefix)
        gate = hp.get("gate", "hard")
        if known[k].only_with and known[k].only_with != gate:
            raise ConfigError(f"{prefix}recipe.hparams.{k}={v!r} applies to gate={known[k].only_with!r} only, "
                              f"not {prefix}recipe.hparams.gate={gate!r}")
    try:
        upge.get_recipe(name, **hp)
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"{prefix}recipe.hparams={hp}: recipe {name!r} does not build: {e}") from e


# ----------------------------------------------------------------------------- validation
def is_pipeline(config) -> bool:
    return "order" in config


def validate(config, prefix: str = "config.", recipe=None) -> None:
    """Every key of ``config`` is a schema key and its value is in the key's domain; raises
    ``ConfigError`` naming the ``config.`` key and the allowed values. Reads no file, builds
    nothing. A pipeline config: every stage (``config.<stage>.…``); a comparison config
    (``mode=comparison``): nothing here (each arm is validated when it runs). ``recipe``: a recipe
    value the run trains (``train.recipe_io``): ``recipe.name`` may name it, with no hparams."""
    if is_pipeline(config):
        for name in config.order:
            if name in config:
                validate(config[name], f"{prefix}{name}.")
        return
    if config.get("mode") == "comparison":
        return
    table = keys()
    values = _flatten(config)
    mode = values.get("mode", "online")
    for path, v in values.items():
        if path not in table:
            close = difflib.get_close_matches(path, list(table), n=1)
            raise ConfigError(f"{prefix}{path} is not a config key" + (f"; did you mean {prefix}{close[0]}?"
                                                                       if close else "")
                              + " (`upt train --config F --help` lists every key)")
    for path, key in table.items():
        if key.section and path not in values:
            if mode in _SECTIONS[key.section]:
                raise ConfigError(f"{prefix}{key.section} is missing: mode={mode} reads {prefix}{path} "
                                  f"({key.doc}); see experiments/{'star' if key.section == 'star' else mode}.py")
            continue
        if path not in values:  # an older config without the key: the code's default applies
            continue
        if not (path == "recipe.name" and recipe is not None and values[path] == recipe.name):
            key.check(values[path], prefix)
        if key.entries is not None:
            if path == "recipe.hparams":
                continue
            entries, given = key.entries(config), _plain(values[path]) or {}
            for k, v in given.items():
                if k not in entries:
                    raise ConfigError(f"{prefix}{path}.{k}: not one of its keys: {', '.join(entries)}")
                entries[k].check(v, prefix)
    if "recipe" in config and (recipe is None or config.recipe.name in recipe_names()):
        _check_hparams(config, prefix)
    elif "recipe" in config and _plain(config.recipe.get("hparams")):
        raise ConfigError(f"{prefix}recipe.hparams: recipe {recipe.name!r} is a value; it takes no hparams")
    if values.get("data.system_prompt") is not None and values.get("data.template") != "chat":
        raise ConfigError(f"{prefix}data.system_prompt is set but {prefix}data.template="
                          f"{values.get('data.template')!r}: only the chat template has a system message")


# ----------------------------------------------------------------------------- the command line
def open_key(path: str) -> tuple[str, str, str] | None:
    """``(prefix, open key, entry)`` when ``path`` (an override's dotted path, maybe under a
    pipeline stage's ``prefix``) names an entry of an open dict, e.g.
    ``grpo.recipe.hparams.kl_coef`` → ``("grpo.", "recipe.hparams", "kl_coef")``; else None."""
    for open_path in OPEN_KEYS:
        head, sep, entry = path.rpartition("." + open_path + ".") if not path.startswith(open_path + ".") \
            else ("", ".", path[len(open_path) + 1:])
        if sep and entry and "." not in entry:
            return (head + "." if head else ""), open_path, entry
    return None


def parse_value(raw: str, domain: Domain):
    """A command-line string as a value of ``domain``'s type (``None``/``none`` when optional)."""
    s = raw.strip()
    if s.lower() in ("none", "null") and (domain.optional or domain.type is object):
        return None
    t = domain.type
    if t is bool:
        if s.lower() in ("true", "1", "yes", "on"):
            return True
        if s.lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{raw!r} is not a bool")
    if t is int:
        return int(s)
    if t is float:
        return float(s)
    if t is str:
        return raw
    try:
        return ast.literal_eval(s)
    except (ValueError, SyntaxError):
        return raw


def apply_override(config, path: str, raw: str) -> None:
    """Sets the open-dict entry ``path`` (see `open_key`) of ``config`` from the command-line
    string ``raw``, typed by its schema entry (a recipe's hyper-parameter: by the configured
    recipe, after every other override). Raises ``ConfigError`` naming the key."""
    import ml_collections

    prefix, open_path, entry = open_key(path)
    sub = config
    for part in prefix.rstrip(".").split(".") if prefix else ():
        if part not in sub:
            raise ConfigError(f"config.{path}: config.{prefix.rstrip('.')} does not exist")
        sub = sub[part]
    entries = keys()[open_path].entries(sub)
    where = (f"recipe {sub.recipe.name!r}" if open_path == "recipe.hparams" else f"config.{prefix}{open_path}")
    if entry not in entries:
        raise ConfigError(f"config.{path}: {where} has no key {entry!r}; its keys: {', '.join(entries) or 'none'}")
    key = entries[entry]
    try:
        value = parse_value(raw, key.domain)
    except ValueError as e:
        raise ConfigError(f"config.{path}={raw!r}: must be {key.domain.allowed} ({e})") from e
    key.check(value, f"config.{prefix}")
    head, _, last = open_path.rpartition(".")
    parent = sub[head] if head else sub
    current = parent[last]
    d = dict(_plain(current) or {})
    d[entry] = value
    parent[last] = ml_collections.ConfigDict(d, type_safe=False)


def _show(v) -> str:
    if isinstance(v, str):
        return v if v else "''"
    return repr(_plain(v))


def describe(config=None, *, title: str = "") -> str:
    """The schema as text for ``--help``: one entry per key, ``KEY=DEFAULT  TYPE: ALLOWED`` and its
    doc; the defaults are ``config``'s values (None: ``base_config()``'s, with every recipe's
    hyper-parameters), the hyper-parameters the configured recipe's."""
    lines = [title] if title else []
    if config is not None and is_pipeline(config):
        lines.append(f"a pipeline: stages {', '.join(config.order)} in order, each set with "
                     "--config.STAGE.KEY=VALUE; run_dir: the pipeline's directory")
        for name in config.order:
            lines += ["", f"== stage {name} (--config.{name}.KEY=VALUE)", describe(config[name], title="")]
        return "\n".join(lines)
    if config is not None and config.get("mode") == "comparison":
        lines.append("a comparison config (its arms are experiments, each validated when it runs); its keys:")
        lines += [f"  {p}={_show(v)}" for p, v in _flatten(config).items()]
        return "\n".join(lines)
    values = _flatten(config) if config is not None else {}
    mode = values.get("mode", "online")

    def entry(path, key, value, indent="  "):
        lines.append(f"{indent}{path}={_show(value)}  {key.type}: {key.domain.allowed}")
        lines.append(f"{indent}    {key.doc}")

    for path, key in keys().items():
        if key.section and config is not None and path not in values and mode not in _SECTIONS[key.section]:
            continue
        value = values.get(path, key.default)
        if key.section:
            key = dataclasses.replace(key, doc=f"{key.doc} [mode={'|'.join(_SECTIONS[key.section])}]")
        if key.entries is None:
            entry(path, key, value)
            continue
        entry(path, key, value if path != "recipe.hparams" else (_plain(value) or {}))
        if path == "recipe.hparams":
            names = [config.recipe.name] if config is not None else recipe_names()
            for name in names:
                given = _plain(config.recipe.hparams) or {} if config is not None else {}
                lines.append(f"    recipe {name}:" + ("" if recipe_hparams(name) else " no hyper-parameters"))
                for k, hk in recipe_hparams(name).items():
                    entry(hk.path, hk, given.get(k, hk.default), indent="      ")
        else:
            sub = config if config is not None else _base()
            given = _plain(values.get(path)) or {}
            for k, ek in key.entries(sub).items():
                entry(ek.path, ek, given.get(k, ek.default), indent="      ")
    return "\n".join(lines)


def _base():
    from upt_jax.train.config import base_config

    return base_config()
