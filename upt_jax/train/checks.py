"""Checks of a run's config that need no compute, each failing with a message naming its config
key: mesh vs devices, rollouts vs the recipe's groups and gates, batch divisibility, input paths,
the run directory, free disk for checkpoints, the tokenizer against the model (`validate`)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from upt_jax.models.logprobs import REMAT_MODES
from upt_jax.train import lora_state
from upt_jax.train.model_source import preset_config
from upt_jax.train.run_model import is_weights_dir
from upt_jax.train.run_spec import critic_spec, get_recipe, group_size, is_remote, mesh_sizes, uses_demos

__all__ = [
    "validate",
    "check_recipe",
    "check_hf_dir",
    "check_paths",
    "check_run_dir",
    "checkpoint_bytes_estimate",
    "check_disk",
]


def check_recipe(config, recipe=None) -> None:
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
                f"nothing. Use config.rollout.n ≥ 2"
            )
    for gate, gamma in req.thresholds:
        key = "config.recipe.hparams.gamma" if config.recipe.name in recipe_names() else f"gate {gate}: γ"
        if not 0.0 <= gamma < 1.0:
            rates = ", ".join(f"{k}/{n}" for k in range(min(n, 3) + 1)) + (", …, 1" if n > 3 else "")
            raise ValueError(
                f"{key}={gamma}: gate {gate.name}'s pass-rate threshold must satisfy 0 ≤ γ < 1. With "
                f"config.rollout.n={n} the pass rate P takes the values {rates}; "
                + (
                    "no P exceeds γ, so no question would ever be trained with RL"
                    if gamma >= 1.0
                    else "every P exceeds γ, so no demonstration would ever be used"
                )
            )


def check_hf_dir(d, key: str) -> None:
    """``d`` (the value of config key ``key``) is a HF checkpoint directory with safetensors weights."""
    if not d or not os.path.isdir(d):
        raise FileNotFoundError(f"{key}={d!r} is not a directory")
    present = sorted(os.listdir(d))
    if "config.json" not in present:
        raise FileNotFoundError(f"{key}={d!r} has no config.json (found {present})")
    if not any(p == "model.safetensors" or p == "model.safetensors.index.json" for p in present):
        if any(p.endswith((".bin", ".pt", ".pth", ".pkl")) for p in present):
            raise ValueError(
                f"{key}={d!r} holds only pickle-based weights ({present}); "
                "upt_jax loads safetensors only and never unpickles (convert with "
                "transformers: model.save_pretrained(dir, safe_serialization=True))"
            )
        raise FileNotFoundError(
            f"{key}={d!r} has no model.safetensors or model.safetensors.index.json (found {present})"
        )


def check_teacher_paths(config, recipe=None) -> None:
    """A distillation recipe's teacher (``config.teacher``) is named and exists."""
    from upt_jax.train.distill import teacher_inputs

    if not teacher_inputs(get_recipe(config, recipe)).any:
        return
    tc = config.get("teacher") or {}
    make = (
        "train one first, e.g. `upt train --config experiments/sft.py --config.run_dir={d}`, or point "
        "config.teacher.run_dir at a previous upt_jax run (config.teacher.hf_dir at a Hugging Face "
        "checkpoint)"
    )
    if tc.get("hf_dir"):
        check_hf_dir(tc.hf_dir, "config.teacher.hf_dir")
        return
    d = tc.get("run_dir", "")
    what = f"recipe {config.recipe.name!r} distils from a teacher model"
    if not d:
        raise ValueError(f"config.teacher.run_dir is empty: {what}; " + make.format(d="runs/sft"))
    if is_remote(d):
        return
    if not os.path.isdir(d):
        raise FileNotFoundError(f"config.teacher.run_dir={d!r} does not exist: {what}; " + make.format(d=d))
    ckpts = os.path.join(d, "checkpoints") if os.path.isdir(os.path.join(d, "checkpoints")) else d
    if not is_weights_dir(d) and not any(p.isdigit() for p in os.listdir(ckpts)):  # a shipped model: a teacher
        raise FileNotFoundError(
            f"config.teacher.run_dir={d!r} holds no saved step in {ckpts}: {what}; " + make.format(d=d)
        )


def check_paths(config, recipe=None) -> None:
    """Every input path the config names exists (and holds what it must), before anything is read."""
    import glob

    mc = config.model
    if mc.init == "hf":
        check_hf_dir(mc.hf_dir, "config.model.hf_dir")
    elif mc.init == "checkpoint":  # local or a bucket path (gs://…)
        from etils import epath

        d = mc.checkpoint
        if not d or not epath.Path(d).is_dir():
            raise FileNotFoundError(
                f"config.model.checkpoint={d!r} is not a directory (model.init=checkpoint "
                "names a previous run directory or its checkpoints/, or a shipped model "
                "directory such as upt_jax.bases.base_dir('arith_hint'))"
            )
        from upt_jax.train.run_model import checkpoints_dir, is_weights_dir

        ckpts = checkpoints_dir(d)
        if not is_weights_dir(d) and not any(p.name.isdigit() for p in ckpts.iterdir()):
            raise FileNotFoundError(f"config.model.checkpoint={d!r} holds no saved step in {ckpts}")
    tok = os.fspath(config.tokenizer)
    if tok not in ("char", "builtin:char") and not os.path.isdir(tok):
        raise FileNotFoundError(f"config.tokenizer={tok!r} is neither 'char' nor a local tokenizer directory")
    if config.data.source == "file":
        paths = config.data.path
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths or [])
        if not paths or not all(str(p) for p in paths):
            raise ValueError("config.data.path is empty (data.source=file needs a file, a glob or a dataset directory)")
        for p in map(str, paths):
            if not is_remote(p) and not os.path.exists(p) and not glob.glob(p):
                raise FileNotFoundError(f"config.data.path: {p!r} does not exist (nor matches any file)")
    check_teacher_paths(config, recipe)


def check_run_dir(config) -> None:
    """The run directory can be created and written (probed with a file: ``os.access`` says yes
    to root even on a read-only mount; on a bucket path, ``gs://…``, with an object written
    through ``etils.epath`` and deleted)."""
    import tempfile

    run_dir = config.run_dir
    if is_remote(run_dir):
        _probe_remote_run_dir(run_dir)
        return
    try:
        os.makedirs(run_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".upt_write_probe"):
            pass
    except OSError as e:
        raise PermissionError(
            f"config.run_dir={run_dir!r} is not a writable directory ({type(e).__name__}: {e})"
        ) from e


def _probe_remote_run_dir(run_dir) -> None:
    """A bucket run directory can be written: one object written and deleted through epath."""
    from etils import epath

    probe = epath.Path(run_dir) / f".upt_write_probe.{os.getpid()}.{jax.process_index()}"
    try:
        epath.Path(run_dir).mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink(missing_ok=True)
    except (OSError, ImportError, ValueError) as e:  # ImportError: no fsspec backend (gcsfs)
        raise PermissionError(
            f"config.run_dir={run_dir!r} is not a writable bucket path ({type(e).__name__}: {e})"
        ) from e


def checkpoint_bytes_estimate(config, vocab_size: int | None = None, recipe=None) -> int:
    """Bytes one checkpoint takes, roughly: parameters in ``param_dtype`` plus the optimiser's two
    float32 moments per parameter (AdamW), doubled for PPO's critic (a copy of the policy)."""
    from upt_jax.models import ModelConfig

    mc = config.model
    if mc.init == "hf":
        cfg = ModelConfig.from_pretrained(mc.hf_dir, param_dtype=mc.param_dtype, dtype=mc.dtype)
    elif mc.init == "checkpoint":  # the architecture the run directory recorded
        from upt_jax.train.run_model import recorded_model_config

        cfg, _ = recorded_model_config(
            mc.checkpoint,
            key="config.model.checkpoint",
            param_dtype=mc.param_dtype,
            dtype=mc.dtype,
            vocab_size=vocab_size,
        )
    else:
        cfg = preset_config(mc, vocab_size=vocab_size)
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


def check_disk(config, vocab_size: int | None, recipe=None) -> None:
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
            + "); free space, lower config.checkpoint.keep or point config.run_dir elsewhere"
        )


def validate(config, records=None, *, vocab_size: int | None = None, recipe=None) -> None:
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
        raise ValueError(
            f"config.mesh data={m.data} fsdp={m.fsdp} tensor={m.tensor}: each must be ≥ 1, "
            "and at most one may be -1 (the rest of the devices)"
        )
    known = int(np.prod([s for s in sizes if s != -1]))
    if (-1 in sizes and n_devices % known) or (-1 not in sizes and known != n_devices):
        raise ValueError(f"config.mesh data={m.data} fsdp={m.fsdp} tensor={m.tensor} does not fit {n_devices} devices")
    if config.data.source == "corpus" and config.mode != "offline":
        raise ValueError(f"config.data.source=corpus (language modelling) needs mode=offline, not {config.mode!r}")
    if config.mode == "online" and config.rollout.n < 1:
        raise ValueError("config.rollout.n must be ≥ 1")
    if config.train.questions_per_step < 1 or config.train.steps < 0:
        raise ValueError("config.train.questions_per_step must be ≥ 1 and steps ≥ 0")
    if config.train.microbatches < 1:
        raise ValueError(f"config.train.microbatches={config.train.microbatches} must be ≥ 1")
    if config.train.questions_per_step % config.train.microbatches:
        raise ValueError(
            f"questions_per_step={config.train.questions_per_step} is not divisible by "
            f"microbatches={config.train.microbatches}"
        )
    if config.train.get("logprob_remat", "auto") not in REMAT_MODES:
        raise ValueError(f"config.train.logprob_remat={config.train.logprob_remat!r}: one of {REMAT_MODES}")
    if config.train.get("pack_sequences", False) and config.train.get("share_prompt", False):
        raise ValueError(
            "config.train.share_prompt and config.train.pack_sequences both cut padded compute in the update, "
            "in two incompatible layouts: set one"
        )
    if config.train.get("pack_sequences", False) and config.data.source != "corpus":
        from upt_jax.train.distill import teacher_inputs

        if teacher_inputs(recipe).logits:
            raise ValueError(
                f"config.train.pack_sequences=True: recipe {config.recipe.name!r} trains on the "
                "teacher's vocabulary distribution, which packed rows do not carry; set it False"
            )
    if config.train.max_nonfinite_in_a_row < 1:
        raise ValueError(f"config.train.max_nonfinite_in_a_row={config.train.max_nonfinite_in_a_row} must be ≥ 1")
    if config.data.source != "corpus":
        check_recipe(config, recipe)
    if n_devices > 1:
        data, fsdp, _ = mesh_sizes(config, n_devices)
        group = 1 if config.data.source == "corpus" else group_size(config, uses_demos(config, recipe))
        rows = config.train.questions_per_step * group
        if rows % (data * fsdp):
            raise ValueError(
                f"a step's {rows} rows (config.train.questions_per_step={config.train.questions_per_step}"
                f" × group size {group}) do not split over config.mesh data × fsdp = {data * fsdp}"
            )
    if records is None:
        check_paths(config, recipe)
    elif len(records) < config.train.questions_per_step:
        raise ValueError(f"{len(records)} training records < questions_per_step {config.train.questions_per_step}")
    check_run_dir(config)
    if vocab_size is not None:
        from upt_jax.train.vocab import check_tokenizer_fits

        check_tokenizer_fits(config, vocab_size)
    if records is not None and not is_remote(config.run_dir):  # no free-space check on a bucket
        _remove_incomplete_saves(config, recipe)  # a failed save's leftovers first: they hold space
        check_disk(config, vocab_size, recipe)
