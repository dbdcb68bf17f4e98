"""The training loop: rollout → reward → gate → update (online), or demonstrations → update
(offline), with Orbax checkpoints, automatic resume and JSONL metrics.

    from upt_jax.train.trainer import train
    train(config)       # config: upt_jax.train.config.base_config() or an experiments/ module

One step (online): take ``Q`` questions; sample ``n`` rollouts each with the current
parameters (behaviour log-probs from the sampler); score them with the verifier; if the
recipe has demonstration rows (HPT, LUFFY, SRFT) add each question's demonstration as the
last row of its group; ``prepare`` (advantages, gates) runs on the whole batch inside the
jitted step; then ``update_epochs`` updates. Offline: ``Q`` demonstrations per step.

Reproducibility: the sampling key of step ``s`` is ``fold_in(state.rng, s)`` and the data
iterator state is checkpointed, so a resumed run continues bitwise as an uninterrupted one.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from upt_jax import upge
from upt_jax.models.logprobs import REMAT_MODES, sequence_logprobs
from upt_jax.models.partition import batch_shards
from upt_jax.train.kto import examples, kto_rows, uses_kto, with_reference_point
from upt_jax.train import compile_cache, lora_state, shapes

log = logging.getLogger(__name__)


def progress_postfix(metrics: dict) -> dict:
    """The progress bar's numbers: ``loss`` (the method's objective: the NLL for SFT, the clipped
    PPO objective, the DPO loss, ...), ``reward`` (mean rollout reward) and ``acc`` (a pair or step
    accuracy: DPO-family terms, reward models, PRMs) where the step has them."""
    out = {"loss": metrics.get("loss"), "reward": metrics.get("reward/mean"),
           "acc": next((v for k, v in metrics.items() if k.endswith("accuracy")), None)}
    return {k: round(float(v), 3) for k, v in out.items() if v is not None}


class NonFiniteError(RuntimeError):
    """Too many consecutive updates were skipped for a non-finite loss or gradient."""


# ----------------------------------------------------------------------------- builders
def build_model(mc, *, vocab_size: int | None = None, special: dict | None = None, mesh=None):
    """A model from ``config.model``: a preset (random init), a HF directory, or the model saved in
    a previous upt_jax run directory (``init=checkpoint``: stage hand-off), rebuilt with the
    architecture recorded there (``run_model.model_from_run``) and its newest usable params.

    ``vocab_size`` and ``special`` (token ids) come from the run's tokenizer: a preset's vocabulary
    and special ids; for ``init=checkpoint`` the tokenizer must fit the recorded vocabulary.
    """
    from upt_jax.models import init_model, load_hf_checkpoint, preset
    from upt_jax.models.partition import shard_model

    if mc.init == "hf":
        if not mc.hf_dir or not os.path.isdir(mc.hf_dir):
            raise FileNotFoundError(f"config.model.hf_dir={mc.hf_dir!r} is not a directory")
        return load_hf_checkpoint(mc.hf_dir, param_dtype=mc.param_dtype, dtype=mc.dtype, mesh=mesh,
                                  remat=mc.remat)
    if mc.init not in ("preset", "checkpoint"):
        raise ValueError(f"config.model.init must be preset, hf or checkpoint, not {mc.init!r}")
    if mc.init == "checkpoint":
        from upt_jax.train.run_model import model_from_run

        _adopt_checkpoint_shape(mc)
        model, _ = model_from_run(mc.checkpoint, key="config.model.checkpoint", param_dtype=mc.param_dtype,
                                  dtype=mc.dtype, remat=mc.remat, mesh=mesh, vocab_size=vocab_size,
                                  special=special, tokenizer="config.tokenizer")
        return model
    overrides = dict(mc.overrides.to_dict() if hasattr(mc.overrides, "to_dict") else mc.overrides)
    if vocab_size is not None:
        overrides.setdefault("vocab_size", vocab_size)
    overrides.update({k: v for k, v in (special or {}).items() if v is not None})
    cfg = preset(mc.preset, param_dtype=mc.param_dtype, dtype=mc.dtype, **overrides)
    model = init_model(cfg, 0, remat=mc.remat)
    if mesh is not None:
        shard_model(model, mesh)
    return model


def _checkpoints_of(run_dir):
    """The checkpoint directory of ``model.checkpoint`` (a run directory, local or ``gs://…``,
    or its ``checkpoints/``), as an ``etils.epath.Path``."""
    from upt_jax.train.run_model import checkpoints_dir

    return checkpoints_dir(run_dir)


def _adopt_checkpoint_shape(mc) -> None:
    """``init=checkpoint``: the model's shape is the one recorded in the run directory
    ``mc.checkpoint`` (``model.json``; ``config.json`` for older runs). When that shape comes from
    a preset (through any chain of runs), the preset and overrides replace ``mc``'s, in place, so
    that the new run's saved config agrees with the model it trains (a model from a HF directory
    has no preset: its ``model.json`` alone describes it)."""
    import ml_collections

    from upt_jax.train.run_model import lineage_preset, source_of

    found = lineage_preset(source_of(mc)["parent"])
    if found is None:
        return
    name, overrides = found
    ours = mc.overrides.to_dict() if hasattr(mc.overrides, "to_dict") else dict(mc.overrides)
    if name != mc.preset or overrides != ours:
        log.info("model shape from %s: preset %s, overrides %s (config had %s, %s)", mc.checkpoint, name,
                 overrides, mc.preset, ours)
        mc.preset = name
        mc.overrides = ml_collections.ConfigDict(overrides, type_safe=False)


def load_records(config, recipe=None) -> list[dict]:
    """Training records from ``config.data`` (synthetic tiers or a file) for the run's recipe
    (``recipe``, default `get_recipe`: demonstrations are required when it trains on them)."""
    from upt_jax.data import DataConfig, load_records as read, tasks

    dc = config.data
    if dc.source == "synthetic":  # tiers of any registered task family (upt_jax.data.tasks)
        return tasks.TierSource(tuple(dc.tiers), dc.n_per_tier, seed=config.seed)
    if dc.source == "corpus":
        return corpus_records(config)
    if dc.source != "file":
        raise ValueError(f"config.data.source must be synthetic, file or corpus, not {dc.source!r}")
    task = {"offline": "sft", "preference": "dpo"}.get(config.mode, "hpt" if _uses_demos(config, recipe) else "rl")
    if config.mode == "preference" and uses_kto(get_recipe(config, recipe)):
        task = "kto"  # unpaired (prompt, completion, label) rows
    records, stats = read(DataConfig(path=dc.path, format=dc.format, task=task,
                                     fields=dict(dc.fields.to_dict()), skip_bad_rows=dc.skip_bad_rows,
                                     duplicate_ids=dc.get("duplicates", "keep"),
                                     verifier=dc.verifier, max_row_chars=dc.get("max_row_chars", 1_000_000)))
    if stats.rows_skipped:
        dropped = dc.get("duplicates", "keep") == "drop" and stats.duplicates
        log.warning("skipped %d malformed%s rows of %s: %s", stats.rows_skipped, " or repeated" if dropped else "",
                    dc.path, stats.metrics())
    if stats.duplicates:
        log.info("%s: %d rows repeat an earlier question (data.duplicates=%s)", dc.path, stats.duplicates,
                 dc.get("duplicates", "keep"))
    if not records:
        raise ValueError(f"no usable rows in {dc.path}")
    chat = next((r for r in records if r.get("prompt_messages")), None)
    if chat is not None and dc.template != "chat":
        raise ValueError(f"config.data.template={dc.template!r}: {chat['location']} is a chat row ({chat['layout']}); "
                         "set config.data.template=chat to render it with the tokenizer's chat template")
    return _Records(records, stats.metrics())


class _Records(list):
    """Records read from files, with the reader's counts (``data/rows_read``, ``data/rows_skipped``,
    ``data/skipped/<reason>``), which every step's metrics carry."""

    def __init__(self, records, data_metrics: dict):
        super().__init__(records)
        self.data_metrics = dict(data_metrics)


def corpus_records(config) -> list[dict]:
    """``config.data.source = "corpus"``: plain language-modelling records ``{"id", "text"}`` of
    the pre-training corpus of the task family that owns ``config.data.corpus.tiers``
    (`upt_jax.data.tasks.TaskFamily.corpus`; the built-in ``arith`` family's is
    `synthetic.pretraining_corpus`), with ``config.data.corpus``'s ``n_docs``, ``tiers`` (repeat a
    tier to weight it), ``demo_fraction`` and ``facts_per_doc``, rendered with
    ``config.data.template`` as the evaluation prompts are. Offline mode trains on every token of
    ``text`` (see `Trainer._text_rows`)."""
    from upt_jax.data import tasks

    cc = config.data.corpus
    tiers = tuple(tasks.resolve_tier(t) for t in cc.tiers)
    families = {tasks.task_of(t).name for t in tiers}
    if len(families) != 1:
        raise ValueError(f"config.data.corpus.tiers={tiers}: tiers of one task family, not {sorted(families)}")
    docs = tasks.task_of(tiers[0]).corpus(int(cc.n_docs), seed=config.seed, tiers=tiers,
                                          template=config.data.template, demo_fraction=float(cc.demo_fraction),
                                          facts_per_doc=int(cc.facts_per_doc))
    pack = int(cc.get("pack_len", 0) or 0)
    if not pack:
        return [{"id": f"corpus/{config.seed}/{i}", "text": d} for i, d in enumerate(docs)]
    # packing: consecutive documents share a row while their characters (+ one EOS each) fit in
    # pack_len (for the char tokenizer a character is a token), so rows carry little padding
    records, group, used = [], [], 0
    for d in docs:
        if group and used + len(d) + 1 > pack:
            records.append(group)
            group, used = [], 0
        group.append(d)
        used += len(d) + 1
    records.append(group)
    return [{"id": f"corpus/{config.seed}/packed/{i}", "text": g} for i, g in enumerate(records)]


def get_recipe(config, recipe=None):
    """The recipe a run of ``config`` trains (``recipe`` when given; see `recipe_io.get_recipe`)."""
    from upt_jax.train.recipe_io import get_recipe as resolve

    return resolve(config, recipe)


def _uses_demos(config, recipe=None) -> bool:
    from upt_jax import upge

    return upge.requirements(get_recipe(config, recipe)).demos


def critic_spec(recipe):
    """``(gamma, lam, kl_penalty_or_None)`` when a part of the recipe reads a critic's values (GAE,
    PPO), else None."""
    from upt_jax import upge

    use = upge.requirements(recipe).critic
    if use is None:
        return None
    kw = use.part.kw
    return kw.get("gamma", 1.0), kw.get("lam", 0.95), use.kl


def preference_pair(record) -> tuple[str, str]:
    """``(chosen, rejected)`` of a record; a synthetic record without a rejected answer gets its
    demonstration as ``chosen`` and the same demonstration ending in a wrong answer as ``rejected``."""
    if record.get("chosen") and record.get("rejected"):
        return record["chosen"], record["rejected"]
    demo, answer = record.get("demonstration"), record.get("answer")
    if not demo or answer is None:
        raise ValueError(f"record {record.get('id')} has neither chosen/rejected nor a demonstration")
    wrong = str(int(answer) + 1) if str(answer).lstrip("-").isdigit() else str(answer) + "0"
    tail = "\\boxed{" + str(answer) + "}"
    if tail not in demo:
        raise ValueError(f"record {record.get('id')}: demonstration does not end in {tail}")
    return demo, demo.replace(tail, "\\boxed{" + wrong + "}")


def rollout_temperature(config) -> float:
    """The temperature τ of the policy an online run trains: its rollouts' sampling temperature
    (1 for greedy rollouts, see `upt_jax.sampling.policy_temperature`); 1 for offline and
    preference data, which no sampler drew."""
    from upt_jax.sampling import SamplingParams, policy_temperature

    if config.mode != "online":
        return 1.0
    return policy_temperature(SamplingParams(temperature=float(config.rollout.temperature)))


def kept_set_replay(config) -> bool:
    """Whether an online run trains the top-k/top-p truncated policy its rollouts were drawn from
    (``rollout.kept_set_replay`` and truncation on, not greedy): π_θ^τ renormalised over each
    token's kept set, behaviour log-probs the sampler's ``sampling_logprobs``."""
    r = config.rollout
    truncating = int(r.top_k) > 0 or float(r.top_p) < 1.0
    return bool(r.get("kept_set_replay", True)) and truncating and float(r.temperature) > 0


def kept_set_rows(rows: dict, replay: bool) -> dict:
    """The batch keys of ``rows`` (``pack_rows`` output with ``old_logp``, ``rollout_logp`` and
    ``rollout_threshold``) for kept-set replay: with ``replay``, ``old_logp`` becomes the sampled
    distribution's log-probs (``rollout_logp``) and ``rollout_threshold`` holds each token's kept-set
    threshold (``−inf`` off the response tokens); without, ``rollout_threshold`` is dropped."""
    thr = rows.pop("rollout_threshold")
    if not replay:
        return {}
    return {"old_logp": rows["rollout_logp"], "rollout_threshold": np.where(rows["mask"] > 0, thr, -np.inf)
            .astype(np.float32)}


def _mesh_sizes(config, n_devices: int) -> tuple[int, int, int]:
    """``(data, fsdp, tensor)`` of ``config.mesh`` with its ``-1`` resolved (after the fit check)."""
    sizes = [int(s) for s in (config.mesh.data, config.mesh.fsdp, config.mesh.tensor)]
    known = int(np.prod([s for s in sizes if s != -1]))
    return tuple(n_devices // known if s == -1 else s for s in sizes)


def _group_size(config, with_demos: bool) -> int:
    if config.mode == "online":
        return int(config.rollout.n) + int(with_demos)
    if config.mode == "preference":
        return 1 if uses_kto(get_recipe(config)) else 2  # KTO: unpaired rows
    return 1


def _is_remote(path) -> bool:
    return "://" in str(path)


def _check_recipe(config, recipe=None) -> None:
    """Rollouts per question against what the recipe's parts need (``upge.requirements``): groups
    big enough for their baselines, and pass-rate thresholds (HPT's gate γ) a pass rate can cross."""
    from upt_jax import upge
    from upt_jax.train.schema import recipe_names

    if config.mode != "online":
        return
    req = upge.requirements(get_recipe(config, recipe))
    n = int(config.rollout.n)
    for use in req.groups:
        # rows of the group the part reads: the rollouts, plus the demonstration where it shares
        # the estimator (LUFFY, SRFT); HPT's RL term normalises over the rollouts only
        rows = n + int(req.demos and use.with_demo)
        if use.role == "rollout" and rows < use.min_rows:
            what = "group-normalised advantages" if use.kind == "advantage" else "a group gate"
            raise ValueError(
                f"config.rollout.n={n}: recipe {config.recipe.name!r} uses {what} "
                f"({use.part.name}) over groups of {rows} row; a group of one has advantage 0 and learns "
                f"nothing. Use config.rollout.n ≥ 2")
    for gate, gamma in req.thresholds:
        key = "config.recipe.hparams.gamma" if config.recipe.name in recipe_names() else f"gate {gate}: γ"
        if not 0.0 <= gamma < 1.0:
            rates = ", ".join(f"{k}/{n}" for k in range(min(n, 3) + 1)) + (", …, 1" if n > 3 else "")
            raise ValueError(
                f"{key}={gamma}: gate {gate.name}'s pass-rate threshold must satisfy 0 ≤ γ < 1. With "
                f"config.rollout.n={n} the pass rate P takes the values {rates}; "
                + ("no P exceeds γ, so no question would ever be trained with RL" if gamma >= 1.0 else
                   "every P exceeds γ, so no demonstration would ever be used"))


def _check_hf_dir(d, key: str) -> None:
    """``d`` (the value of config key ``key``) is a HF checkpoint directory with safetensors weights."""
    if not d or not os.path.isdir(d):
        raise FileNotFoundError(f"{key}={d!r} is not a directory")
    present = sorted(os.listdir(d))
    if "config.json" not in present:
        raise FileNotFoundError(f"{key}={d!r} has no config.json (found {present})")
    if not any(p == "model.safetensors" or p == "model.safetensors.index.json" for p in present):
        if any(p.endswith((".bin", ".pt", ".pth", ".pkl")) for p in present):
            raise ValueError(f"{key}={d!r} holds only pickle-based weights ({present}); "
                             "upt_jax loads safetensors only and never unpickles (convert with "
                             "transformers: model.save_pretrained(dir, safe_serialization=True))")
        raise FileNotFoundError(f"{key}={d!r} has no model.safetensors or "
                                f"model.safetensors.index.json (found {present})")


def _check_teacher_paths(config, recipe=None) -> None:
    """A distillation recipe's teacher (``config.teacher``) is named and exists."""
    from upt_jax.train.step import teacher_inputs

    if not teacher_inputs(get_recipe(config, recipe)).any:
        return
    tc = config.get("teacher") or {}
    make = ("train one first, e.g. `upt train --config experiments/sft.py --config.run_dir={d}`, or point "
            "config.teacher.run_dir at a previous upt_jax run (config.teacher.hf_dir at a Hugging Face "
            "checkpoint)")
    if tc.get("hf_dir"):
        _check_hf_dir(tc.hf_dir, "config.teacher.hf_dir")
        return
    d = tc.get("run_dir", "")
    what = f"recipe {config.recipe.name!r} distils from a teacher model"
    if not d:
        raise ValueError(f"config.teacher.run_dir is empty: {what}; " + make.format(d="runs/sft"))
    if _is_remote(d):
        return
    if not os.path.isdir(d):
        raise FileNotFoundError(f"config.teacher.run_dir={d!r} does not exist: {what}; " + make.format(d=d))
    ckpts = os.path.join(d, "checkpoints") if os.path.isdir(os.path.join(d, "checkpoints")) else d
    if not any(p.isdigit() for p in os.listdir(ckpts)):
        raise FileNotFoundError(f"config.teacher.run_dir={d!r} holds no saved step in {ckpts}: {what}; "
                                + make.format(d=d))


def _check_paths(config, recipe=None) -> None:
    """Every input path the config names exists (and holds what it must), before anything is read."""
    import glob

    mc = config.model
    if mc.init == "hf":
        _check_hf_dir(mc.hf_dir, "config.model.hf_dir")
    elif mc.init == "checkpoint":  # local or a bucket path (gs://…)
        from etils import epath

        d = mc.checkpoint
        if not d or not epath.Path(d).is_dir():
            raise FileNotFoundError(f"config.model.checkpoint={d!r} is not a directory (model.init=checkpoint "
                                    "names a previous run directory or its checkpoints/, or a shipped model "
                                    "directory such as upt_jax.bases.base_dir('arith_hint'))")
        from upt_jax.train.run_model import is_weights_dir

        ckpts = _checkpoints_of(d)
        if not is_weights_dir(d) and not any(p.name.isdigit() for p in ckpts.iterdir()):
            raise FileNotFoundError(f"config.model.checkpoint={d!r} holds no saved step in {ckpts}")
    tok = os.fspath(config.tokenizer)
    if tok not in ("char", "builtin:char") and not os.path.isdir(tok):
        raise FileNotFoundError(f"config.tokenizer={tok!r} is neither 'char' nor a local tokenizer directory")
    if config.data.source == "file":
        paths = config.data.path
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths or [])
        if not paths or not all(str(p) for p in paths):
            raise ValueError("config.data.path is empty (data.source=file needs a file, a glob or a "
                             "dataset directory)")
        for p in map(str, paths):
            if not _is_remote(p) and not os.path.exists(p) and not glob.glob(p):
                raise FileNotFoundError(f"config.data.path: {p!r} does not exist (nor matches any file)")
    _check_teacher_paths(config, recipe)


def _check_run_dir(config) -> None:
    """The run directory can be created and written (probed with a file: ``os.access`` says yes
    to root even on a read-only mount; on a bucket path, ``gs://…``, with an object written
    through ``etils.epath`` and deleted)."""
    import tempfile

    run_dir = config.run_dir
    if _is_remote(run_dir):
        _probe_remote_run_dir(run_dir)
        return
    try:
        os.makedirs(run_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".upt_write_probe"):
            pass
    except OSError as e:
        raise PermissionError(f"config.run_dir={run_dir!r} is not a writable directory "
                              f"({type(e).__name__}: {e})") from e


def _probe_remote_run_dir(run_dir) -> None:
    """A bucket run directory can be written: one object written and deleted through epath."""
    from etils import epath

    probe = epath.Path(run_dir) / f".upt_write_probe.{os.getpid()}.{jax.process_index()}"
    try:
        epath.Path(run_dir).mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink(missing_ok=True)
    except (OSError, ImportError, ValueError) as e:  # ImportError: no fsspec backend (gcsfs)
        raise PermissionError(f"config.run_dir={run_dir!r} is not a writable bucket path "
                              f"({type(e).__name__}: {e})") from e


def checkpoint_bytes_estimate(config, vocab_size: int | None = None, recipe=None) -> int:
    """Bytes one checkpoint takes, roughly: parameters in ``param_dtype`` plus the optimiser's two
    float32 moments per parameter (AdamW), doubled for PPO's critic (a copy of the policy)."""
    from upt_jax.models import ModelConfig, preset

    mc = config.model
    if mc.init == "hf":
        cfg = ModelConfig.from_pretrained(mc.hf_dir, param_dtype=mc.param_dtype, dtype=mc.dtype)
    elif mc.init == "checkpoint":  # the architecture the run directory recorded
        from upt_jax.train.run_model import recorded_model_config

        cfg, _ = recorded_model_config(mc.checkpoint, key="config.model.checkpoint", param_dtype=mc.param_dtype,
                                       dtype=mc.dtype, vocab_size=vocab_size)
    else:
        overrides = dict(mc.overrides.to_dict() if hasattr(mc.overrides, "to_dict") else mc.overrides)
        if vocab_size is not None:
            overrides.setdefault("vocab_size", vocab_size)
        cfg = preset(mc.preset, param_dtype=mc.param_dtype, dtype=mc.dtype, **overrides)
    n = cfg.num_params()
    per_param = np.dtype(jnp.dtype(mc.param_dtype)).itemsize + 2 * 4
    lora = lora_state.lora_config(config)
    if lora is not None:  # adapters alone (float32, two moments), at most every projection's
        n, per_param = lora_state.adapter_params_bound(cfg, lora.rank), 3 * 4
    copies = 2 if critic_spec(get_recipe(config, recipe)) is not None else 1
    return int(n * per_param * copies)


def _checkpoint_dirs(config, recipe=None) -> list[str]:
    """The run's checkpoint directories: the policy's, and the critic's for PPO."""
    dirs = [os.path.join(config.run_dir, "checkpoints")]
    if critic_spec(get_recipe(config, recipe)) is not None:
        dirs.append(os.path.join(config.run_dir, "checkpoints_critic"))
    return dirs


def _remove_incomplete_saves(config, recipe=None) -> None:
    """Leftovers of saves that never committed (a killed process, a write that failed on a full
    disk) are removed before the free-space check, so they neither count against it nor make the
    rerun of the same command fail (the ``Checkpointer`` would remove them only later)."""
    from upt_jax.train.checkpoint import remove_incomplete_saves

    for d in _checkpoint_dirs(config, recipe):
        if os.path.isdir(d):
            remove_incomplete_saves(d)


def _check_disk(config, vocab_size: int | None, recipe=None) -> None:
    """Free space for ``checkpoint.keep + 1`` checkpoints: ``keep`` are kept and the next one is
    written before the oldest is deleted. Checkpoints already saved (up to ``keep``) occupy their
    space already, so a resumed run needs room for the rest only."""
    import shutil

    one = checkpoint_bytes_estimate(config, vocab_size, recipe)  # the critic's copy included (PPO)
    keep = int(config.checkpoint.keep)
    ckpts = os.path.join(config.run_dir, "checkpoints")
    saved = min(keep, sum(1 for p in os.listdir(ckpts) if p.isdigit())) if os.path.isdir(ckpts) else 0
    copies = keep + 1 - saved
    need = one * copies
    free = shutil.disk_usage(config.run_dir).free
    if free < need * 1.1:
        raise OSError(
            f"config.run_dir={config.run_dir!r}: {free / 2**20:.1f} MiB free, but {copies} more checkpoint(s) "
            f"need about {need / 2**20:.1f} MiB: config.checkpoint.keep={keep} kept plus one being written"
            + (f", {saved} already saved" if saved else "")
            + f", {one / 2**20:.1f} MiB each (parameters + optimiser state"
            + (", policy and critic" if critic_spec(get_recipe(config, recipe)) is not None else "")
            + "); free space, lower config.checkpoint.keep or point config.run_dir elsewhere")


def _validate(config, records=None, *, vocab_size: int | None = None, recipe=None) -> None:
    """Checks that need no compute, each failing with a message naming its config key.

    ``Trainer`` calls it twice: with the config alone before the tokenizer, the data or the model
    is read (mesh vs devices, rollouts vs recipe and gate, batch divisibility, input paths, the
    run directory), then with the records (enough of them) and the vocabulary size (free disk for
    a checkpoint; the tokenizer fits the model). ``recipe``: the run's recipe when it is a value
    (``Trainer(config, recipe=...)`` or recorded in the run directory, see `recipe_io`).
    """
    if records is None:  # every key in its domain (upt_jax.train.schema), before anything else
        from upt_jax.train import schema

        schema.validate(config, recipe=recipe)
    recipe = get_recipe(config, recipe)
    n_devices = jax.device_count()
    m = config.mesh
    sizes = [m.data, m.fsdp, m.tensor]
    if any(s == 0 or s < -1 for s in sizes) or sizes.count(-1) > 1:
        raise ValueError(f"config.mesh data={m.data} fsdp={m.fsdp} tensor={m.tensor}: each must be ≥ 1, "
                         "and at most one may be -1 (the rest of the devices)")
    known = int(np.prod([s for s in sizes if s != -1]))
    if (-1 in sizes and n_devices % known) or (-1 not in sizes and known != n_devices):
        raise ValueError(f"config.mesh data={m.data} fsdp={m.fsdp} tensor={m.tensor} does not fit "
                         f"{n_devices} devices")
    if config.data.source == "corpus" and config.mode != "offline":
        raise ValueError(f"config.data.source=corpus (language modelling) needs mode=offline, not "
                         f"{config.mode!r}")
    if config.mode == "online" and config.rollout.n < 1:
        raise ValueError("config.rollout.n must be ≥ 1")
    if config.train.questions_per_step < 1 or config.train.steps < 0:
        raise ValueError("config.train.questions_per_step must be ≥ 1 and steps ≥ 0")
    if config.train.microbatches < 1:
        raise ValueError(f"config.train.microbatches={config.train.microbatches} must be ≥ 1")
    if config.train.questions_per_step % config.train.microbatches:
        raise ValueError(f"questions_per_step={config.train.questions_per_step} is not divisible by "
                         f"microbatches={config.train.microbatches}")
    if config.train.get("logprob_remat", "auto") not in REMAT_MODES:
        raise ValueError(f"config.train.logprob_remat={config.train.logprob_remat!r}: one of {REMAT_MODES}")
    if config.train.get("pack_sequences", False) and config.data.source != "corpus":
        from upt_jax.train.step import teacher_inputs

        if teacher_inputs(recipe).logits:
            raise ValueError(f"config.train.pack_sequences=True: recipe {config.recipe.name!r} trains on the "
                             "teacher's vocabulary distribution, which packed rows do not carry; set it False")
    if config.train.max_nonfinite_in_a_row < 1:
        raise ValueError(f"config.train.max_nonfinite_in_a_row={config.train.max_nonfinite_in_a_row} "
                         "must be ≥ 1")
    if config.data.source != "corpus":
        _check_recipe(config, recipe)
    if n_devices > 1:
        data, fsdp, _ = _mesh_sizes(config, n_devices)
        group = 1 if config.data.source == "corpus" else _group_size(config, _uses_demos(config, recipe))
        rows = config.train.questions_per_step * group
        if rows % (data * fsdp):
            raise ValueError(
                f"a step's {rows} rows (config.train.questions_per_step={config.train.questions_per_step}"
                f" × group size {group}) do not split over config.mesh data × fsdp = {data * fsdp}")
    if records is None:
        _check_paths(config, recipe)
    elif len(records) < config.train.questions_per_step:
        raise ValueError(f"{len(records)} training records < questions_per_step "
                         f"{config.train.questions_per_step}")
    _check_run_dir(config)
    if vocab_size is not None:
        from upt_jax.train.vocab import check_tokenizer_fits

        check_tokenizer_fits(config, vocab_size)
    if records is not None and not _is_remote(config.run_dir):  # no free-space check on a bucket
        _remove_incomplete_saves(config, recipe)  # a failed save's leftovers first: they hold space
        _check_disk(config, vocab_size, recipe)

# ----------------------------------------------------------------------------- the loop
class Trainer:
    """Holds everything one run needs; ``run()`` trains to ``config.train.steps``.

    ``recipe``: an ``upt_jax.upge.Recipe`` value to train instead of ``config.recipe`` (e.g. one
    composed in a notebook); the run's config then names it, and ``<run_dir>/recipe.json`` records
    it so that ``upt train --config ... --config.recipe.name=NAME`` resumes it in a new process
    (`upt_jax.train.recipe_io`). A run resumed from a checkpoint must train the recipe it recorded.
    """

    def __init__(self, config, recipe=None):
        from upt_jax import upge
        from upt_jax.data import load_tokenizer, make_dataset
        from upt_jax.models.partition import make_mesh
        from upt_jax.rewards import Verifier
        from upt_jax.sampling import Sampler
        from upt_jax.train import recipe_io
        from upt_jax.train.checkpoint import Checkpointer
        from upt_jax.train.run_model import carry_tokenizer, record_for, write_record
        from upt_jax.train.state import create_train_state, make_optimizer
        from upt_jax.train.step import make_train_step, upge_objective

        from upt_jax.train.compile_stats import CompileWatch

        self._compiles = CompileWatch()  # time/first_step_s, compile/* (counted from here)
        if recipe is not None:
            config = recipe_io.config_for(config, recipe)
        self.config = config
        compile_cache.enable(config)  # XLA's persistent cache (before anything compiles)
        recipe = recipe_io.given_or_recorded(config, recipe)
        _validate(config, recipe=recipe)  # config, paths and run directory: before anything is read or built
        self.recipe = get_recipe(config, recipe)
        recipe_io.check_resumed(config.run_dir, self.recipe)  # a resumed run trains the recipe it recorded
        carry_tokenizer(config)  # init=checkpoint: the parent run's tokenizer and template
        self.tok = load_tokenizer(config.tokenizer)
        self.records = load_records(config, self.recipe)
        _validate(config, self.records, vocab_size=self.tok.vocab_size, recipe=self.recipe)
        self.requirements = upge.requirements(self.recipe)
        self.with_demos = self.requirements.demos
        self.online = config.mode == "online"
        if config.mode not in ("online", "offline", "preference"):
            raise ValueError(f"config.mode must be online, offline or preference, not {config.mode!r}")
        self.preference = config.mode == "preference"
        m = config.mesh
        self.mesh = make_mesh(m.data, m.fsdp, m.tensor) if jax.device_count() > 1 else None
        special = dict(eos_token_id=self.tok.eos_id, bos_token_id=self.tok.bos_id,
                       pad_token_id=self.tok.pad_id)
        model = build_model(config.model, vocab_size=self.tok.vocab_size, special=special, mesh=self.mesh)
        model, self.lora = lora_state.adapt(model, config)  # model.lora: adapters (None: full fine-tuning)
        t = config.train
        self.tx = make_optimizer(t.learning_rate, schedule=t.schedule, warmup_steps=t.warmup_steps,
                                 total_steps=t.steps * t.update_epochs, weight_decay=t.weight_decay,
                                 max_grad_norm=t.max_grad_norm, decay_steps=t.get("decay_steps", 0) * t.update_epochs)
        self.graphdef, self.state, self.shardings = create_train_state(
            model, self.tx, seed=config.seed, mesh=self.mesh, trainable=lora_state.trainable(self.lora))
        self.group_size = _group_size(config, self.with_demos)  # rows vs mesh checked in _validate
        # online: the policy trained is the one the rollouts come from, π_θ at the rollout
        # temperature τ (log-probs, ratios, entropies, the reference's log-probs all at τ)
        self.temperature = rollout_temperature(config)
        objective = upge_objective(self.recipe, group_size=self.group_size, chunk_size=t.logprob_chunk,
                                   logits_remat=t.get("logprob_remat", "auto"), temperature=self.temperature)
        self.step_fn = make_train_step(self.graphdef, self.tx, objective, num_microbatches=t.microbatches,
                                       group_size=self.group_size, skip_grad_norm=t.skip_grad_norm,
                                       skip_update_ratio=t.get("skip_update_ratio", 1.0),
                                       mesh=self.mesh, shardings=self.shardings,
                                       trainable=lora_state.trainable(self.lora),
                                       model_hook=lora_state.dropout_hook(self.lora))
        # rollout.overlap_chunks = C > 1: generation of chunk k+1 runs while chunk k is scored in
        # self._score_executor (upt_jax.train.overlap). A learned reward model stays serial: it is
        # a device program (launched from a second thread its order against the sampler's could
        # differ between processes of a multi-host mesh: a collective deadlock) and reward.normalize
        # = batch/running normalises over the whole step's scores.
        self.overlap_chunks = int(config.rollout.get("overlap_chunks", 1))
        if self.overlap_chunks < 1:
            raise ValueError(f"config.rollout.overlap_chunks must be ≥ 1, got {self.overlap_chunks}")
        if self.overlap_chunks > 1 and self.online and config.reward.source == "model":
            log.warning("rollout.overlap_chunks=%d ignored: the learned reward model (reward.source=model) "
                        "scores after generation, serially", self.overlap_chunks)
        if not self.online or config.reward.source == "model":
            self.overlap_chunks = 1
        self._score_executor = None
        streams = config.rollout.get("streams", "auto")  # a command-line override arrives as a string
        sampler_kw = {"streams": int(streams) if isinstance(streams, str) and streams.isdigit() else streams}
        if self.overlap_chunks > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._score_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upt_jax-reward")
            # one chunk per compiled batch (not padded up to the default bucket of 8), rounded up
            # to the rows the mesh splits prompts over (the sampler pads to a multiple of those)
            chunk = -(-t.questions_per_step // self.overlap_chunks)
            shards = batch_shards(self.mesh)
            padded = -(-chunk // shards) * shards
            sampler_kw["batch_bucket"] = padded * max(1, int(config.rollout.n))  # the bucket counts decoded rows
            if chunk % shards:
                log.warning("rollout.overlap_chunks=%d: chunks of %d questions are padded to %d prompts "
                            "(a multiple of the mesh's data×fsdp=%d)", self.overlap_chunks, chunk, padded, shards)
        self.sampler = Sampler(model, pad_id=self.tok.pad_id, mesh=self.mesh, **sampler_kw) if self.online else None
        self._logp_fn = jax.jit(lambda params, tokens, attn: sequence_logprobs(
            nnx.merge(self.graphdef, params), tokens, attn, chunk_size=t.logprob_chunk,
            temperature=self.temperature,
            remat="always"))  # forward only: chunking costs no recompute and holds one chunk
        # the frozen reference: the initial parameters (a copy: the train state's are donated); with
        # adapters, the train state's own params with the adapters switched off (no copy)
        ref = self.requirements.reference
        self.ref_params = jax.tree.map(jnp.copy, self.state.params) if ref and self.lora is None else None
        self._ref_off_fn = None if not ref or self.lora is None else lora_state.reference_logp_fn(
            model, chunk_size=t.logprob_chunk, temperature=self.temperature)
        self._load_teacher(model.cfg.vocab_size, special)
        self.critic = critic_spec(self.recipe)
        if self.critic is not None:  # with adapters, a fully trained critic from the base weights
            self._init_critic(model if self.lora is None else lora_state.merge_lora(model))
        self.reward_fns = None  # reward.functions: the user's reward functions (upt_jax.rewards.functions)
        if self.online and config.reward.source == "verifier" and config.reward.get("functions"):
            from upt_jax.rewards.functions import RewardFunctions

            rc = config.reward
            self.reward_fns = RewardFunctions(list(rc.functions), list(rc.weights), timeout_s=rc.timeout_s,
                                              where="config.reward.functions")
        self.verifier = Verifier(config.data.verifier) if self.online and self.reward_fns is None else None
        self.learned_reward = None
        if self.online and config.reward.source == "model":
            from upt_jax.train.reward_model import LearnedReward

            self.learned_reward = LearnedReward(config.reward.model_run_dir, pad_id=self.tok.pad_id,
                                                normalize=config.reward.normalize)
        self.process_reward = None
        if self.online and config.reward.prm_run_dir:
            from upt_jax.train.prm import ProcessReward

            newline = self.tok.encode("\n")
            if len(newline) != 1:
                raise ValueError("config.reward.prm_run_dir needs a tokenizer with a single newline token")
            self.process_reward = ProcessReward(config.reward.prm_run_dir, newline_id=newline[0])
        if config.reward.source not in ("verifier", "model"):
            raise ValueError(f"config.reward.source must be verifier or model, not {config.reward.source!r}")
        # online: one prompt bucket for the whole run (upt_jax.train.shapes): no recompile for a new one
        self._prompt_floor = shapes.prompt_floor(self.records, self._prompt_ids) if self.online else 0
        self.dataset = make_dataset(self.records, seed=config.seed, num_epochs=None,
                                    batch_size=t.questions_per_step, drop_remainder=True)
        self.data_iter = iter(self.dataset)
        self.ckpt = Checkpointer(os.path.join(config.run_dir, "checkpoints"), keep=config.checkpoint.keep,
                                 save_every=config.checkpoint.every, async_save=config.checkpoint.async_save)
        from upt_jax.train.metrics_log import MetricsWriter

        self.metrics_log = MetricsWriter(config.run_dir, tensorboard=config.log.tensorboard)
        self.nonfinite_in_a_row = 0
        from upt_jax.train.in_training import StepHooks

        self.hooks = StepHooks(self)  # completions.jsonl, in-training evaluation (train.eval_every)
        self._resume()
        if jax.process_index() == 0:  # one writer per run directory (multi-process runs)
            from etils import epath

            (epath.Path(config.run_dir) / "config.json").write_text(config.to_json_best_effort(indent=2))
        recipe_io.write_recorded(config.run_dir, self.recipe)  # recipe.json (process 0)
        write_record(config.run_dir, record_for(config, model, self.tok))  # model.json (process 0)

    # ------------------------------------------------------------------ teacher (distillation)
    def _load_teacher(self, vocab_size: int, special: dict) -> None:
        """The frozen teacher of a distillation recipe (``config.teacher``), loaded once: any shape
        (a run directory's is the one it recorded, as for ``model.init=checkpoint``), the
        student's tokenizer. Sets ``teacher_params`` (None without a teacher) and the jitted
        functions that give each step its ``teacher_logits`` (and ``teacher_ids`` for top-``k``) or
        ``teacher_logp``."""
        import ml_collections

        from upt_jax.train.step import teacher_inputs, teacher_logits

        self.teacher_needs = teacher_inputs(self.recipe)
        self.teacher_params = None
        tc = self.config.get("teacher")
        if not self.teacher_needs.any:
            if tc is not None and (tc.run_dir or tc.hf_dir):
                log.warning("config.teacher is set but recipe %s uses no teacher: not loaded", self.recipe.name)
            return
        self._check_teacher_tokenizer(tc)
        if tc.hf_dir:
            mc = ml_collections.ConfigDict(dict(init="hf", hf_dir=tc.hf_dir, param_dtype=tc.param_dtype,
                                                dtype=tc.dtype, remat=tc.remat))
            teacher = build_model(mc, mesh=self.mesh)
        else:  # the architecture recorded in the run directory (its preset/overrides: only without one)
            from upt_jax.train.run_model import model_from_run

            teacher, _ = model_from_run(tc.run_dir, key="config.teacher.run_dir", param_dtype=tc.param_dtype,
                                        dtype=tc.dtype, remat=tc.remat, mesh=self.mesh,
                                        vocab_size=self.tok.vocab_size, special=special, check_vocab=False,
                                        fallback=(tc.preset, tc.overrides.to_dict()))
        v_t, n = teacher.cfg.vocab_size, self.tok.vocab_size
        key = "config.teacher." + ("hf_dir" if tc.hf_dir else "run_dir")
        if v_t != vocab_size and min(v_t, vocab_size) < n:
            raise ValueError(
                f"{key}={tc.hf_dir or tc.run_dir!r}: the teacher's vocabulary has {v_t} entries, the "
                f"student's {vocab_size} (tokenizer {self.config.tokenizer!r}: {n} tokens); distillation "
                "needs one vocabulary (sizes may differ only in padding beyond the tokenizer's tokens)")
        log.info("teacher from %s: %d parameters, vocabulary %d (student %d)", tc.hf_dir or tc.run_dir,
                 teacher.cfg.num_params(), v_t, vocab_size)
        graphdef, self.teacher_params = nnx.split(teacher)
        chunk, top_k = self.config.train.logprob_chunk, self.teacher_needs.top_k
        self._teacher_logits_fn = jax.jit(lambda params, tokens, attn: teacher_logits(
            nnx.merge(graphdef, params), tokens, attn, vocab_size=vocab_size, top_k=top_k, chunk_size=chunk))
        self._teacher_logp_fn = jax.jit(lambda params, tokens, attn: sequence_logprobs(
            nnx.merge(graphdef, params), tokens, attn, chunk_size=chunk, remat="always"))

    def _check_teacher_tokenizer(self, tc) -> None:
        """The teacher's tokenizer (the one a run recorded, or a HF directory's own files) is the
        student's: same size and the same ids for a probe text. Not checked when it cannot be read."""
        from upt_jax.data import load_tokenizer

        from upt_jax.train.run_model import recorded_tokenizer

        spec = None
        if tc.hf_dir:
            spec = tc.hf_dir if os.path.isfile(os.path.join(tc.hf_dir, "tokenizer_config.json")) else None
        elif not _is_remote(tc.run_dir):
            spec = (recorded_tokenizer(tc.run_dir) or {}).get("tokenizer")
        if spec is None or (spec not in ("char", "builtin:char") and not os.path.isdir(spec)):
            log.warning("teacher %s: its tokenizer %r cannot be read; only the vocabulary size is checked",
                        tc.hf_dir or tc.run_dir, spec)
            return
        theirs, probe = load_tokenizer(spec), "Question: 12 + 7 * 3 = ?\nAnswer: \\boxed{33}"
        if theirs.vocab_size != self.tok.vocab_size or theirs.encode(probe) != self.tok.encode(probe):
            raise ValueError(
                f"config.teacher.{'hf_dir' if tc.hf_dir else 'run_dir'}={tc.hf_dir or tc.run_dir!r} uses "
                f"tokenizer {spec!r} ({theirs.vocab_size} tokens), the student config.tokenizer="
                f"{self.config.tokenizer!r} ({self.tok.vocab_size} tokens); distillation needs one vocabulary")

    def _teacher_batch(self, batch) -> dict:
        """The teacher's inputs for this step's rows (frozen, no gradient): ``teacher_logits [B, L, V]``
        (or ``[B, L, k]`` with ``teacher_ids [B, L, k]`` under the recipe's ``top_k``), and/or
        ``teacher_logp [B, L]`` (the teacher's log-prob of each token, 0 off ``mask``)."""
        out, tokens, attn = {}, batch["tokens"], batch["attention_mask"]
        if self.teacher_needs.logits:
            z = self._teacher_logits_fn(self.teacher_params, tokens, attn)
            if self.teacher_needs.top_k:
                out["teacher_logits"], out["teacher_ids"] = z
            else:
                out["teacher_logits"] = z
        if self.teacher_needs.logp:
            out["teacher_logp"] = self._teacher_logp_fn(self.teacher_params, tokens, attn) * batch["mask"]
        return out

    # ------------------------------------------------------------------ critic (PPO)
    def _init_critic(self, model):
        from upt_jax.models.value import value_loss, value_model_from
        from upt_jax.train.checkpoint import Checkpointer
        from upt_jax.train.state import create_train_state, make_optimizer
        from upt_jax.train.step import Objective, make_train_step

        t, cc = self.config.train, self.config.critic
        critic = value_model_from(model, seed=self.config.seed)
        self.critic_tx = make_optimizer(cc.learning_rate, max_grad_norm=t.max_grad_norm)
        self.critic_graphdef, self.critic_state, self.critic_shardings = create_train_state(
            critic, self.critic_tx, seed=self.config.seed, mesh=self.mesh)

        def sums(m, batch):
            v = m(batch["tokens"], batch["attention_mask"])
            s, _ = value_loss(v, batch["values"], batch["returns"], batch["mask"], clip=cc.clip)
            return {"value": s}, {}

        objective = Objective(denominators=lambda b: {"value": jnp.sum(b["mask"])}, sums=sums)
        self.critic_step = make_train_step(self.critic_graphdef, self.critic_tx, objective,
                                           num_microbatches=t.microbatches, group_size=self.group_size,
                                           skip_update_ratio=t.get("skip_update_ratio", 1.0),
                                           mesh=self.mesh, shardings=self.critic_shardings)
        self.critic_ckpt = Checkpointer(os.path.join(self.config.run_dir, "checkpoints_critic"),
                                        keep=self.config.checkpoint.keep, save_every=self.config.checkpoint.every,
                                        async_save=self.config.checkpoint.async_save)
        self._values_fn = jax.jit(lambda params, tokens, attn: nnx.merge(self.critic_graphdef, params)(
            tokens, attn))

    def _critic_inputs(self, batch):
        """Old values and GAE returns for the critic (the same rewards the policy's GAE sees)."""
        from upt_jax import upge

        gamma, lam, kl = self.critic
        values = self._values_fn(self.critic_state.params, batch["tokens"], batch["attention_mask"])
        values = values * batch["mask"]
        if kl is not None:
            tok_rewards = upge.kl_penalised_rewards(batch["rewards"], batch["old_logp"], batch["ref_logp"],
                                                    batch["mask"], kl.coef, kl.kind)
        else:
            tok_rewards = upge.last_token_rewards(batch["rewards"], batch["mask"])
        _, returns = upge.gae_advantages(tok_rewards, values, batch["mask"], gamma, lam)
        return values, returns

    # ------------------------------------------------------------------ resume
    def _resume(self):
        from upt_jax.train.checkpoint import abstract_with_shardings

        if self.ckpt.latest_step() is None:
            if jax.process_index() == 0:
                self.metrics_log.reset()  # a fresh run: stale metrics from a run that saved nothing
                self.hooks.truncate_after(None)
            return
        abstract = abstract_with_shardings(lora_state.saved_state(self.state, self.lora),
                                           lora_state.saved_state(self.shardings, self.lora))
        restored, extra = self.ckpt.restore(abstract)
        self.state = lora_state.with_base(restored, self.state, self.lora)  # adapters: base not saved
        if self.critic is not None:
            self.critic_state, _ = self.critic_ckpt.restore(
                abstract_with_shardings(self.critic_state, self.critic_shardings), step=extra["step"])
        self.data_iter = iter(self.dataset)
        self.data_iter.set_state(extra["data_iterator"])
        step = int(self.state.step)
        log.info("resumed %s at step %d", self.config.run_dir, step)
        if jax.process_index() == 0:
            self.metrics_log.truncate_after(extra.get("step", step))
            self.hooks.truncate_after(extra.get("step", step))

    # ------------------------------------------------------------------ one step
    def _prompt_ids(self, question) -> list[int]:
        """``question``: a record (its chat prompt when it has one) or a question's text."""
        from upt_jax.data.templates import prompt_ids

        c = self.config.data
        return prompt_ids(self.tok, question, c.template, system_prompt=c.system_prompt)

    def _demo_ids(self, record) -> list[int]:
        demo = record.get("demonstration")
        if not demo:
            raise ValueError(f"record {record.get('id')} has no demonstration, which recipe "
                             f"{self.recipe.name} needs")
        return self.tok.encode(demo) + [self.tok.eos_id]

    def _text_rows(self, records):
        """Language-modelling rows: ``text ⧺ EOS`` (a packed record: each document ⧺ EOS, one
        after the other), trained on every token but the first, which is the one-column prompt
        (no BOS is added: prompts at rollout and evaluation time have none either)."""
        from upt_jax.train.batching import pack_rows

        def encode(text):  # one document, or a packed list of them, each ending in EOS
            docs = [text] if isinstance(text, str) else list(text)
            return [i for d in docs for i in self.tok.encode(d) + [self.tok.eos_id]]

        ids = [encode(r["text"]) for r in records]
        rows = pack_rows([x[:1] for x in ids], [x[1:] for x in ids], pad_id=self.tok.pad_id, prompt_len=1)
        return rows, {"response_length": float(np.mean([len(x) - 1 for x in ids]))}

    def _rollouts(self, records, prompts, key, timing) -> list[dict]:
        """Sample ``n`` responses per question and score them: one dict per question, in order.

        With ``rollout.overlap_chunks = C > 1`` the questions go in ``C`` chunks (`chunk_bounds`):
        chunk ``k`` is sampled and scored in ``self._score_executor`` while chunk ``k + 1`` is
        sampled (`pipelined_rollouts`). Each chunk passes its ``prompt_offset`` and the sampler
        keys every row by its global index, so the tokens do not depend on C. Adds to
        ``timing``: ``rollout_s`` (Σ generation), ``reward_s`` (Σ decoding + scoring) and
        ``reward_overlap_s`` (the part of ``reward_s`` hidden behind generation).
        """
        from upt_jax.sampling import SamplingParams
        from upt_jax.train.overlap import chunk_bounds, pipelined_rollouts

        rc = self.config.rollout
        params = SamplingParams(max_new_tokens=rc.max_new_tokens, temperature=rc.temperature,
                                top_k=rc.top_k, top_p=rc.top_p, n=rc.n, stop_token_ids=self.tok.stop_ids)
        bounds = chunk_bounds(len(prompts), self.overlap_chunks)

        def generate(k, ab):
            a, b = ab
            return self.sampler.generate(prompts[a:b], key, params, state=self.state.params, prompt_offset=a,
                                         min_prompt_len=self._prompt_floor)

        def score(k, ab, out):
            a, _ = ab
            responses = [out.tokens[i, :out.lengths[i]] for i in range(len(out.lengths))]
            if self.learned_reward is not None:  # RLHF: a trained reward model scores the rollouts
                return self.learned_reward.scores([prompts[a + j] for j in out.prompt_index],
                                                  [r.tolist() for r in responses])
            texts = [self.tok.decode(r) for r in responses]
            if self.reward_fns is not None:
                from upt_jax.rewards.functions import prompt_of

                rows = [records[a + j] for j in out.prompt_index]
                return self.reward_fns.scores([prompt_of(r) for r in rows], texts, rows)
            golds = [records[a + j]["answer"] for j in out.prompt_index]
            return self.verifier.scores(texts, golds)

        results, t = pipelined_rollouts(generate, score, bounds, self._score_executor)
        timing["rollout_s"] += t.generate_s
        timing["rollout_compile_s"] += sum(out.compile_s for out, _ in results)
        timing["reward_s"] += t.score_s
        timing["reward_overlap_s"] = timing.get("reward_overlap_s", 0.0) + t.overlap_s
        n, groups = rc.n, []
        for (a, b), (out, rewards) in zip(bounds, results):
            for j in range(b - a):
                idx = range(j * n, (j + 1) * n)
                groups.append(dict(
                    record=records[a + j], prompt=prompts[a + j],
                    rewards=np.asarray(rewards[j * n:(j + 1) * n], np.float32),
                    responses=[out.tokens[i, :out.lengths[i]].tolist() for i in idx],
                    logp=[out.logprobs[i, :out.lengths[i]] for i in idx],
                    sampling_logp=[out.sampling_logprobs[i, :out.lengths[i]] for i in idx],
                    thresholds=[out.thresholds[i, :out.lengths[i]] for i in idx],
                    finished=[bool(out.finished[i]) for i in idx]))
        self._last_groups = groups
        return groups

    def _batch(self, records, key):
        """Rows, rewards and host-side metrics for one step."""
        from upt_jax.train.batching import pack_rows
        from upt_jax.train.metrics_log import per_tier_means

        timing, info = {}, {}
        if not self.online and all("text" in r for r in records):
            return self._text_rows(records) + (timing,)
        prompts = [self._prompt_ids(r) for r in records]
        if self.preference and uses_kto(self.recipe):
            ex = examples(records, preference_pair)
            resp = [self.tok.encode(x) + [self.tok.eos_id] for x, _ in ex]
            rows = kto_rows(prompts, resp, [y for _, y in ex], pad_id=self.tok.pad_id)
            info["response_length"] = float(np.mean([len(x) for x in resp]))
            info["kto/desirable_frac"] = float(np.mean([y for _, y in ex]))
            return rows, info, timing
        if self.preference:
            pairs = [preference_pair(r) for r in records]
            resp = [self.tok.encode(x) + [self.tok.eos_id] for pair in pairs for x in pair]
            rows = pack_rows([p for p in prompts for _ in range(2)], resp, pad_id=self.tok.pad_id)
            info["response_length"] = float(np.mean([len(x) for x in resp]))
            return rows, info, timing
        if not self.online:  # SFT: a chat row trains on its assistant turns only (upt_jax.data.chat)
            from upt_jax.data.chat import sft_example

            c = self.config.data
            ex = [sft_example(self.tok, r, template=c.template, system_prompt=c.system_prompt) for r in records]
            rows = pack_rows([e[0] for e in ex], [e[1] for e in ex], pad_id=self.tok.pad_id,
                             response_values=dict(loss_mask=[e[2] for e in ex]))
            rows["mask"] = rows["mask"] * rows.pop("loss_mask")
            info["response_length"] = float(np.mean([len(e[1]) for e in ex]))
            return rows, info, timing
        q, n = len(records), self.config.rollout.n
        groups, drawn, tries = [], 0, 0
        timing.update(rollout_s=0.0, rollout_compile_s=0.0, reward_s=0.0)
        dynamic = self.config.train.dynamic_sampling
        while True:
            for g in self._rollouts(records, prompts, jax.random.fold_in(key, tries), timing):
                drawn += 1
                # DAPO dynamic sampling: a group whose rewards are all equal has no signal
                if not dynamic or np.ptp(g["rewards"]) > 0:
                    groups.append(g)
            tries += 1
            if len(groups) >= q or tries >= max(1, self.config.train.dynamic_sampling_max_draws):
                break
            records = next(self.data_iter)
            prompts = [self._prompt_ids(r) for r in records]
        if dynamic:
            info["dynamic_sampling/groups_drawn"] = float(drawn)
            info["dynamic_sampling/kept_frac"] = len(groups) / drawn
            if len(groups) < q:  # out of draws: fill with signal-free groups (zero advantage)
                log.warning("dynamic sampling kept %d of %d groups after %d draws", len(groups), q, tries)
                info["dynamic_sampling/short"] = float(q - len(groups))
                groups += [g for g in self._last_groups if np.ptp(g["rewards"]) == 0][: q - len(groups)]
        groups = groups[:q]
        self._step_groups = groups  # the step's rollouts (completions.jsonl)
        row_prompts, row_resp, row_logp, row_rollout_logp, row_rewards, is_demo = [], [], [], [], [], []
        row_threshold = []
        for g in groups:
            for i in range(n):
                row_prompts.append(g["prompt"])
                row_resp.append(g["responses"][i])
                row_logp.append(g["logp"][i])
                row_rollout_logp.append(g["sampling_logp"][i])
                row_threshold.append(g["thresholds"][i])
                row_rewards.append(g["rewards"][i])
                is_demo.append(False)
            if self.with_demos:
                demo = self._demo_ids(g["record"])
                row_prompts.append(g["prompt"])
                row_resp.append(demo)
                row_logp.append(np.zeros(len(demo), np.float32))  # unknown behaviour policy
                row_rollout_logp.append(np.zeros(len(demo), np.float32))
                row_threshold.append(np.full(len(demo), -np.inf, np.float32))  # the whole vocabulary
                row_rewards.append(1.0)  # a demonstration is correct
                is_demo.append(True)
        rows = pack_rows(row_prompts, row_resp, pad_id=self.tok.pad_id,
                         response_values=dict(old_logp=row_logp, rollout_logp=row_rollout_logp,
                                              rollout_threshold=row_threshold),
                         min_prompt_len=self._prompt_floor)
        rows.update(kept_set_rows(rows, kept_set_replay(self.config)))
        rows["rewards"] = np.asarray(row_rewards, np.float32)
        rows["is_demo"] = np.asarray(is_demo, bool)
        if self.process_reward is not None:  # per-step PRM rewards at step ends (grpo_process)
            rows["step_rewards"], rows["step_mask"] = self.process_reward.step_rewards(rows)
            info["prm/step_reward_mean"] = float(rows["step_rewards"].sum() / max(rows["step_mask"].sum(), 1))
        rewards = np.stack([g["rewards"] for g in groups])
        pass_rate = (rewards > 0.5).mean(axis=1)
        hp = self.config.recipe.hparams
        gamma = float(hp["gamma"]) if "gamma" in hp else 0.0
        lengths = np.asarray([len(x) for g in groups for x in g["responses"]])
        info.update({
            "reward/mean": float(rewards.mean()),
            "pass_rate/mean": float(pass_rate.mean()),
            "pass_rate/all_zero_frac": float(np.mean(pass_rate == 0)),
            "pass_rate/all_one_frac": float(np.mean(pass_rate == 1)),
            "response_length": float(lengths.mean()),
            "finished_frac": float(np.mean([f for g in groups for f in g["finished"]])),
        })
        info.update(per_tier_means("reward", [g["record"].get("tier") for g in groups], rewards))
        if self.with_demos:
            info["gate/sft_frac"] = float(np.mean(pass_rate <= gamma))
        return rows, info, timing

    def _place(self, batch):
        """Batch arrays onto the mesh, rows over ``('data', 'fsdp')`` (see ``place_batch``)."""
        from upt_jax.train.step import place_batch

        return place_batch(batch, self.mesh)

    def _pack(self, rows) -> dict:
        """``rows`` plus their sequences packed for the update step (``pack_sequences``: packed rows
        split over data × fsdp and, per micro-batch, like ``split_microbatches``), and metrics."""
        from upt_jax.train.batching import pack_sequences

        packed = pack_sequences(rows["tokens"], rows["attention_mask"], row_multiple=batch_shards(self.mesh),
                                num_microbatches=self.config.train.microbatches, group_size=self.group_size)
        real = float(np.sum(rows["attention_mask"]))
        info = {"pack/rows": float(packed["packed_tokens"].shape[0]),
                "pack/len": float(packed["packed_tokens"].shape[1]),
                "pack/padding_frac": 1.0 - real / packed["packed_tokens"].size,
                "pack/padding_frac_unpacked": 1.0 - real / rows["attention_mask"].size}
        return dict(rows, **packed), info

    def train_step(self):
        """One step: data → (rollouts, rewards) → update(s). Returns the metrics dict."""
        t_start = time.perf_counter()
        step = int(self.state.step) // max(1, self.config.train.update_epochs)
        records = next(self.data_iter)
        key = jax.random.fold_in(self.state.key, step)
        rows, info, timing = self._batch(records, key)
        rows.pop("truncated")
        if self.config.train.get("pack_sequences", False):
            t0 = time.perf_counter()
            rows, pack_info = self._pack(rows)
            info.update(pack_info)
            timing["pack_s"] = time.perf_counter() - t0
        batch = self._place(rows) if self.mesh is not None else {k: jnp.asarray(v) for k, v in rows.items()}
        t0 = time.perf_counter()
        if self.ref_params is not None:
            batch["ref_logp"] = self._logp_fn(self.ref_params, batch["tokens"], batch["attention_mask"]) \
                * batch["mask"]
        elif self._ref_off_fn is not None:
            batch["ref_logp"] = self._ref_off_fn(self.state.params, batch["tokens"], batch["attention_mask"]) \
                * batch["mask"]
        if "clip_cov_uniforms" in self.requirements.batch:  # Clip-Cov's draw: the step's key
            batch["clip_cov_uniforms"] = jax.random.uniform(jax.random.fold_in(key, 0xC1C0), batch["mask"].shape)
        if "kl_tokens" in batch:  # KTO: the reference point z0 from mismatched pairs, no gradient
            batch, z0 = with_reference_point(batch, self._logp_fn, self.state.params, self.ref_params)
            info["kto/z0"] = float(z0)
        if self.teacher_params is not None:
            batch.update(self._teacher_batch(batch))
        critic_m = {}
        if self.critic is not None:
            batch["values"], returns = self._critic_inputs(batch)
            critic_batch = dict(tokens=batch["tokens"], attention_mask=batch["attention_mask"],
                                mask=batch["mask"], values=batch["values"], returns=returns)
        batch = self._place(batch)
        if self.critic is not None:
            critic_batch = self._place(critic_batch)
        first = None
        for _ in range(self.config.train.update_epochs):
            self.state, m = self.step_fn(self.state, batch)
            first = m if first is None else first
            if self.critic is not None:
                self.critic_state, critic_m = self.critic_step(self.critic_state, critic_batch)
        # the sampler-vs-trainer mismatch is the first update's (the parameters that sampled)
        m = dict(jax.device_get(m), **{k: v for k, v in jax.device_get(first).items() if k.startswith("mismatch/")})
        m.update({f"critic/{k}": v for k, v in jax.device_get(critic_m).items() if not k.startswith("denom")})
        timing["update_s"] = time.perf_counter() - t0
        metrics = {k: float(v) for k, v in m.items()}
        metrics.update(info)
        metrics.update(getattr(self.records, "data_metrics", {}))  # rows read / skipped from files
        metrics.update({f"time/{k}": v for k, v in timing.items()})
        tokens = float(np.sum(rows["attention_mask"]))
        metrics["time/step_s"] = time.perf_counter() - t_start
        metrics["tokens_per_s"] = tokens / max(metrics["time/step_s"], 1e-9)
        metrics.update(self._compiles.step_metrics())
        if self.verifier is not None:
            metrics.update({k: float(v) for k, v in self.verifier.metrics().items()})
        if self.reward_fns is not None:
            metrics.update(self.reward_fns.metrics())  # reward/<name>, reward/<name>/timeout, ...
        # a divergence (non-finite loss, gradient or result, or an update larger than the
        # parameters) counts towards the stop; a skip for skip_grad_norm alone does not
        diverged = metrics["nonfinite"] or metrics["update_too_large"] or metrics.get(
            "critic/nonfinite", 0) or metrics.get("critic/update_too_large", 0)
        if diverged:
            self.nonfinite_in_a_row += 1
        elif not metrics["skipped"]:
            self.nonfinite_in_a_row = 0
        metrics["step"] = int(self.state.step) // max(1, self.config.train.update_epochs)
        return metrics

    # ------------------------------------------------------------------ run
    def _save(self, force=False):
        step = int(self.state.step) // max(1, self.config.train.update_epochs)
        extra = dict(data_iterator=self.data_iter.get_state(), config=json.loads(
            self.config.to_json_best_effort()), step=step)
        if self.critic is not None:
            self.critic_ckpt.save(step, self.critic_state, dict(step=step), force=force)
        return self.ckpt.save(step, lora_state.saved_state(self.state, self.lora), extra, force=force)

    def _stop_request(self, stop) -> int:
        """Between steps (and before the first): raise ``CheckpointSaveError`` when a background
        save has failed, else return the number of the signal that stops the run (0: none).

        With several processes both come from one all-gather, so every process stops after the
        same step (and saves the same step) and none is left in a collective the others left;
        a single process reads its own flags (no collective)."""
        from upt_jax.train.checkpoint import CheckpointSaveError

        failed = self.ckpt.save_failed() or (self.critic is not None and self.critic_ckpt.save_failed())
        signum = stop.requested
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            codes = np.asarray(multihost_utils.process_allgather(np.int32(signum | (int(failed) << 8))))
            failed, signum = bool(np.any(codes >> 8)), int(np.max(codes & 0xFF))
        if failed:
            self.ckpt.wait()  # raises this process's CheckpointSaveError
            if self.critic is not None:
                self.critic_ckpt.wait()
            raise CheckpointSaveError("a checkpoint save failed on another process of this run (see its "
                                      "log); stopping before the next step, as every process does")
        return signum

    def _preempt(self, signum: int, start: int, history: list[dict]):
        """Stop on signal ``signum``: save the step just trained, wait until it is committed and
        raise ``Preempted`` (the command line exits 0)."""
        from upt_jax.train.preemption import Preempted, signal_name

        step = int(self.state.step) // max(1, self.config.train.update_epochs)
        name = signal_name(signum)
        if step > start:
            self._save(force=True)
            self.ckpt.wait()
            if self.critic is not None:
                self.critic_ckpt.wait()
            msg = f"stopped by {name} at step {step}; checkpoint saved; rerun the same command to resume"
        elif step > 0:
            msg = (f"stopped by {name} at step {step}, before this run trained a step (checkpoint step {step} "
                   "is where it started); rerun the same command to resume")
        else:
            msg = f"stopped by {name} before the first step; nothing to save; rerun the same command to start"
        log.warning("%s", msg)
        raise Preempted(msg, signal_name=name, step=step, history=history)

    def run(self) -> list[dict]:
        """Train until ``config.train.steps``; returns this call's metrics (one dict per step).

        Between steps: a background save that failed raises ``CheckpointSaveError`` (naming the
        directory and its free space); a SIGTERM or SIGINT received meanwhile saves the step just
        trained, waits for the save and raises ``upt_jax.train.preemption.Preempted`` (see that
        module: a second signal exits at once, ``checkpoint.preemption_grace_s`` bounds the wait).
        """
        from tqdm.auto import tqdm

        from upt_jax.train import preemption

        with preemption.stop_signals(self.config.checkpoint.get("preemption_grace_s")) as stop:
            return self._run(stop, tqdm)

    def _run(self, stop, tqdm) -> list[dict]:
        total = self.config.train.steps
        start = int(self.state.step) // max(1, self.config.train.update_epochs)
        history = []
        bar = tqdm(total=total, initial=start, desc=self.config.name, disable=not self.config.log.progress
                   or jax.process_index() != 0)
        try:
            for _ in range(start, total):
                signum = self._stop_request(stop)
                if signum:
                    self._preempt(signum, start, history)
                metrics = self.train_step()
                self.hooks.after_step(self, metrics)
                history.append(metrics)
                if jax.process_index() == 0:
                    self.metrics_log.write(metrics)
                bar.update(1)
                bar.set_postfix(progress_postfix(metrics))
                if self.nonfinite_in_a_row >= self.config.train.max_nonfinite_in_a_row:
                    self.ckpt.wait()
                    raise NonFiniteError(
                        f"{self.nonfinite_in_a_row} updates in a row diverged (a non-finite loss, gradient "
                        f"or updated parameters, or an update larger than train.skip_update_ratio × the "
                        f"parameters; last at step {metrics['step']}) and none was applied; "
                        + (f"the last good checkpoint is step {self.ckpt.latest_step()} in {self.ckpt.directory}"
                           if self.ckpt.latest_step() is not None else
                           f"no checkpoint was saved in {self.ckpt.directory}"))
                if not metrics["skipped"]:
                    self._save()
            self._save(force=True)
            self.ckpt.wait()
            if self.critic is not None:
                self.critic_ckpt.wait()
        finally:
            bar.close()
        return history

    def close(self):
        self._compiles.close()
        if self._score_executor is not None:
            self._score_executor.shutdown(wait=True, cancel_futures=True)
        self.metrics_log.close()
        self.ckpt.close()
        if self.critic is not None:
            self.critic_ckpt.close()
        if self.verifier is not None:
            self.verifier.close()
        if getattr(self, "reward_fns", None) is not None:
            self.reward_fns.close()
        if getattr(self, "hooks", None) is not None:
            self.hooks.close()


def train(config) -> list[dict]:
    """Run (or resume) the experiment ``config``; returns the metrics of the steps run now.

    ``config.mode = "reward_model"`` trains a Bradley–Terry reward model instead, and
    ``"prm"`` a process reward model (``upt_jax.train.reward_model``)."""
    if config.mode in ("reward_model", "prm"):
        from upt_jax.train.reward_model import train_reward_model

        return train_reward_model(config)
    if config.mode == "star":
        from upt_jax.train.star import run_star

        return run_star(config)
    if config.mode == "comparison":  # several arms × seeds, evaluated (experiments/paper_table.py)
        from upt_jax.eval.comparison import run_comparison

        run_comparison(config)
        return []
    from upt_jax.train import preemption

    # a SIGTERM/SIGINT while the trainer is being built (model, restore, first compiles) is kept
    # for the loop's first check, which stops before the first step
    with preemption.stop_signals(config.checkpoint.get("preemption_grace_s")):
        trainer = Trainer(config)
        try:
            return trainer.run()
        finally:
            trainer.close()
