"""One way to get a model: from ``config.model`` (a preset with random init, a HF directory, or
the model saved in a previous run directory or a shipped model directory), and a distillation
teacher from ``config.teacher`` (a HF directory, or a run directory with its recorded shape).
Every path that rebuilds a run's model goes through `upt_jax.train.run_model.model_from_run`."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

__all__ = ["build_model", "preset_config", "adopt_checkpoint_shape", "teacher_model"]


def build_model(mc, *, vocab_size: int | None = None, special: dict | None = None, mesh=None):
    """A model from ``config.model``: a preset (random init), a HF directory, or the model saved in
    a previous upt_jax run directory (``init=checkpoint``: stage hand-off), rebuilt with the
    architecture recorded there (``run_model.model_from_run``) and its newest usable params.

    ``vocab_size`` and ``special`` (token ids) come from the run's tokenizer: a preset's vocabulary
    and special ids; for ``init=checkpoint`` the tokenizer must fit the recorded vocabulary.
    """
    from upt_jax.models import init_model, load_hf_checkpoint
    from upt_jax.models.partition import shard_model

    if mc.init == "hf":
        if not mc.hf_dir or not os.path.isdir(mc.hf_dir):
            raise FileNotFoundError(f"config.model.hf_dir={mc.hf_dir!r} is not a directory")
        return load_hf_checkpoint(mc.hf_dir, param_dtype=mc.param_dtype, dtype=mc.dtype, mesh=mesh, remat=mc.remat)
    if mc.init not in ("preset", "checkpoint"):
        raise ValueError(f"config.model.init must be preset, hf or checkpoint, not {mc.init!r}")
    if mc.init == "checkpoint":
        from upt_jax.train.run_model import model_from_run

        adopt_checkpoint_shape(mc)
        model, _ = model_from_run(
            mc.checkpoint,
            key="config.model.checkpoint",
            param_dtype=mc.param_dtype,
            dtype=mc.dtype,
            remat=mc.remat,
            mesh=mesh,
            vocab_size=vocab_size,
            special=special,
            tokenizer="config.tokenizer",
        )
        return model
    model = init_model(preset_config(mc, vocab_size=vocab_size, special=special), 0, remat=mc.remat)
    if mesh is not None:
        shard_model(model, mesh)
    return model


def preset_config(mc, *, vocab_size: int | None = None, special: dict | None = None):
    """The `ModelConfig` of ``config.model``'s preset with its ``overrides``; the tokenizer's
    ``vocab_size`` and ``special`` ids fill in what the overrides leave unset (``vocab_size``) or
    replace (special ids)."""
    from upt_jax.models import preset

    overrides = dict(mc.overrides.to_dict() if hasattr(mc.overrides, "to_dict") else mc.overrides)
    if vocab_size is not None:
        overrides.setdefault("vocab_size", vocab_size)
    overrides.update({k: v for k, v in (special or {}).items() if v is not None})
    return preset(mc.preset, param_dtype=mc.param_dtype, dtype=mc.dtype, **overrides)


def adopt_checkpoint_shape(mc) -> None:
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
        log.info(
            "model shape from %s: preset %s, overrides %s (config had %s, %s)",
            mc.checkpoint,
            name,
            overrides,
            mc.preset,
            ours,
        )
        mc.preset = name
        mc.overrides = ml_collections.ConfigDict(overrides, type_safe=False)


def teacher_model(tc, *, mesh=None, vocab_size: int | None = None, special: dict | None = None):
    """The frozen teacher of ``config.teacher`` (``tc``): its ``hf_dir``, else the model of its
    ``run_dir`` with the architecture recorded there (``preset``/``overrides`` only for a run that
    recorded none); its vocabulary is checked against the student's by the caller."""
    import ml_collections

    if tc.hf_dir:
        mc = ml_collections.ConfigDict(
            dict(init="hf", hf_dir=tc.hf_dir, param_dtype=tc.param_dtype, dtype=tc.dtype, remat=tc.remat)
        )
        return build_model(mc, mesh=mesh)
    from upt_jax.train.run_model import model_from_run

    teacher, _ = model_from_run(
        tc.run_dir,
        key="config.teacher.run_dir",
        param_dtype=tc.param_dtype,
        dtype=tc.dtype,
        remat=tc.remat,
        mesh=mesh,
        vocab_size=vocab_size,
        special=special,
        check_vocab=False,
        fallback=(tc.preset, tc.overrides.to_dict()),
    )
    return teacher
