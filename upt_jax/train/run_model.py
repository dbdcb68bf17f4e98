"""The model a run trains, recorded in its run directory, and the one way to rebuild it.

When a run starts, process 0 writes ``<run_dir>/model.json`` (through ``etils.epath``, so a
``gs://`` run directory works too)::

    {"format": 1,
     "model": {...},            # ModelConfig.to_dict(): model_type, sizes, vocab_size, RoPE,
                                #   tie, bias flags, special token ids, param_dtype/dtype, HF extras
     "source": {...},           # where the architecture came from, one of
                                #   {"init": "hf", "hf_dir": "/abs/dir"}
                                #   {"init": "preset", "preset": "tiny", "overrides": {...}}
                                #   {"init": "checkpoint", "checkpoint": "/abs/run", "parent": {its source}}
     "tokenizer": "char" | "/abs/tokenizer/dir",
     "tokenizer_vocab_size": 300,
     "template": "zero" | "plain" | "chat", "system_prompt": null | "...",
     "chat_template": null | "..."}   # the tokenizer's chat template (what "chat" renders)

`model_from_run` rebuilds a run's model from it (the recorded architecture, the newest usable
checkpoint's params) for every reader of a run directory: ``model.init = checkpoint``
(``model_source.build_model``, which ``upt pipeline`` stages hand off through), a distillation
teacher (``config.teacher.run_dir``) and ``upt eval --run-dir`` / STaR rounds (`load_run_model`).
Run directories written before ``model.json`` existed fall back to their ``config.json``: the
HF directory they were initialised from if it still exists, else ``model.preset`` +
``model.overrides``.

`carry_tokenizer` gives a run that starts from a run directory the tokenizer and prompt
template recorded there.
"""

from __future__ import annotations

import json
import logging
import os

import jax
from etils import epath
from flax import nnx

from upt_jax.models.lora import LoraConfig, apply_lora, merge_lora

# the run directory's files and its tokenizer record, re-exported: one module to import from
from upt_jax.train.run_files import (
    FORMAT,
    MODEL_FILE,
    RECORD_FILE,
    WEIGHTS_FILE,
    absolute_path,  # noqa: F401
    checkpoints_dir,
    file_sha256,
    is_weights_dir,
    read_json,
    read_record,
    run_root,
    tokenizer_spec,
    verify_weights,
)
from upt_jax.train.tokenizer_record import carry_tokenizer, recorded_tokenizer  # noqa: F401

log = logging.getLogger(__name__)

__all__ = [
    "MODEL_FILE",
    "WEIGHTS_FILE",
    "RECORD_FILE",
    "is_weights_dir",
    "file_sha256",
    "verify_weights",
    "run_root",
    "checkpoints_dir",
    "read_record",
    "make_record",
    "record_for",
    "write_record",
    "source_of",
    "lineage_preset",
    "recorded_model_config",
    "model_from_run",
    "load_run_model",
    "recorded_tokenizer",
    "carry_tokenizer",
    "tokenizer_spec",
    "lora_config",
    "run_lora",
    "adapted_model_from_run",
    "merged_model_from_run",
]


# ----------------------------------------------------------------------------- writing
def make_record(cfg, *, source: dict, tokenizer: str, tok, template: str, system_prompt: str | None) -> dict:
    """The ``model.json`` of a run: its resolved ``ModelConfig`` ``cfg``, where it came from
    (``source``), its tokenizer (the spec ``tokenizer`` and the loaded ``tok``) and prompt
    template."""
    return {
        "format": FORMAT,
        "model": cfg.to_dict(),
        "source": source,
        "tokenizer": tokenizer_spec(tokenizer),
        "tokenizer_vocab_size": int(tok.vocab_size),
        "template": template,
        "system_prompt": system_prompt,
        "chat_template": getattr(tok.hf, "chat_template", None) or None,
    }


def write_record(run_dir, record: dict) -> None:
    """Write ``<run_dir>/model.json`` (process 0 only: one writer per run directory)."""
    if jax.process_index() == 0:
        (epath.Path(run_dir) / MODEL_FILE).write_text(json.dumps(record, indent=2))


def source_of(mc) -> dict:
    """The ``source`` entry of ``model.json`` for ``config.model`` = ``mc`` (``init=checkpoint``:
    the parent run and, nested, where its architecture came from)."""
    if mc.init == "hf":
        return {"init": "hf", "hf_dir": absolute_path(mc.hf_dir)}
    if mc.init == "checkpoint":
        root = run_root(mc.checkpoint)
        record = read_record(root)
        parent = record["source"] if record else _legacy_source(read_json(root / "config.json"))
        return {"init": "checkpoint", "checkpoint": absolute_path(str(root)), "parent": parent}
    return {"init": "preset", "preset": mc.preset, "overrides": _plain(mc.overrides)}


def _plain(overrides) -> dict:
    return dict(overrides.to_dict() if hasattr(overrides, "to_dict") else overrides or {})


def _legacy_source(config: dict | None) -> dict | None:
    """A ``source`` entry from an old run's ``config.json``."""
    m = (config or {}).get("model") or {}
    if m.get("init") == "hf":
        return {"init": "hf", "hf_dir": m.get("hf_dir")}
    if "preset" in m:
        return {"init": "preset", "preset": m["preset"], "overrides": m.get("overrides") or {}}
    return None


def lineage_preset(source: dict | None) -> tuple[str, dict] | None:
    """``(preset, overrides)`` when the architecture of a run with this ``source`` comes from a
    preset (through any chain of ``init=checkpoint`` runs), else ``None`` (a HF directory)."""
    while source and source.get("init") == "checkpoint":
        source = source.get("parent")
    if source and source.get("init") == "preset":
        return source["preset"], dict(source.get("overrides") or {})
    return None


# ----------------------------------------------------------------------------- rebuilding
def recorded_model_config(
    path,
    *,
    key: str,
    param_dtype: str | None = None,
    dtype: str | None = None,
    vocab_size: int | None = None,
    special: dict | None = None,
    fallback: tuple[str, dict] | None = None,
):
    """``(ModelConfig, where)``: the architecture of the model saved in the run directory ``path``
    (``key`` names the config key or flag that gave it, for errors), and the file it was read from.

    From ``model.json``; for an older run directory from its ``config.json`` (``model.init=hf``:
    the HF directory's ``config.json`` if it still exists; else ``model.preset`` +
    ``model.overrides`` with ``vocab_size`` and the ``special`` token ids of the caller's
    tokenizer, as those runs were built). ``fallback`` (``(preset, overrides)``) is used when the
    directory records neither; without it that is an error. ``param_dtype`` / ``dtype``, when
    given, replace the recorded ones (a later stage may train in another precision).
    """
    from upt_jax.models import ModelConfig, preset

    root = run_root(path)
    dtypes = {k: v for k, v in (("param_dtype", param_dtype), ("dtype", dtype)) if v}
    record = read_record(root)
    if record is not None:
        return ModelConfig.from_dict(record["model"], **dtypes), str(root / MODEL_FILE)
    config = read_json(root / "config.json")
    m = (config or {}).get("model") or {}
    dtypes = {"param_dtype": m.get("param_dtype", "float32"), "dtype": m.get("dtype"), **dtypes}
    if m.get("init") == "hf":
        hf_dir = m.get("hf_dir") or ""
        if not os.path.isfile(os.path.join(hf_dir, "config.json")):
            raise FileNotFoundError(
                f"{key}={str(path)!r}: {root} has no {MODEL_FILE} and its config.json says the model "
                f"came from the Hugging Face directory model.hf_dir={hf_dir!r}, which no longer holds a "
                "config.json; the architecture of its checkpoints is unknown"
            )
        return (
            ModelConfig.from_pretrained(hf_dir, param_dtype=dtypes["param_dtype"], dtype=dtypes["dtype"]),
            f"{root / 'config.json'} (model.hf_dir={hf_dir})",
        )
    if "preset" in m:
        name, overrides, where = m["preset"], _plain(m.get("overrides")), str(root / "config.json")
    elif fallback is not None:
        (name, overrides), where = fallback, f"{key.rsplit('.', 1)[0]}.preset/overrides"
    else:
        raise FileNotFoundError(
            f"{key}={str(path)!r}: {root} records no model architecture (neither {MODEL_FILE} nor a "
            "config.json with model.preset/overrides or model.hf_dir), so the shape of its checkpoints "
            "is unknown; point it at an upt_jax run directory"
        )
    overrides = dict(overrides)
    if vocab_size is not None:
        overrides.setdefault("vocab_size", vocab_size)
    overrides.update({k: v for k, v in (special or {}).items() if v is not None})
    overrides.update({k: v for k, v in dtypes.items() if v})
    return preset(name, **overrides), where


def model_from_run(
    path,
    *,
    key: str,
    step: int | None = None,
    param_dtype: str | None = None,
    dtype: str | None = None,
    remat: str = "none",
    mesh=None,
    vocab_size: int | None = None,
    special: dict | None = None,
    fallback: tuple[str, dict] | None = None,
    check_vocab: bool = True,
    tokenizer: str = "the tokenizer",
):
    """``(model, step)``: the model saved in the run directory ``path`` (or its ``checkpoints/``),
    with the recorded architecture (`recorded_model_config`) and the params of checkpoint ``step``
    (default: the newest usable one; older steps are tried when a newer one fails its integrity
    check), sharded over ``mesh`` if given. A LoRA run (``model.json`` records ``lora``) gives its
    base model with the adapters merged in (`merged_model_from_run`).

    ``vocab_size``: the caller's tokenizer's size (``tokenizer`` names it in errors); with
    ``check_vocab`` a tokenizer with more tokens than the model has embedding rows is an error.
    Raises ``CheckpointError`` naming ``key`` when the params do not restore into the rebuilt model.
    """
    from upt_jax.models import init_model
    from upt_jax.models.partition import shard_model
    from upt_jax.train.checkpoint import CheckpointError, restore_params

    cfg, where = recorded_model_config(
        path, key=key, param_dtype=param_dtype, dtype=dtype, vocab_size=vocab_size, special=special, fallback=fallback
    )
    if check_vocab and vocab_size is not None and vocab_size > cfg.vocab_size:
        raise ValueError(
            f"{key}={str(path)!r}: the model ({where}) has {cfg.vocab_size} embedding rows but "
            f"{tokenizer} has {vocab_size} tokens; use the tokenizer the run was trained with"
        )
    log.info(
        "model from %s: %s, %d layers, hidden %d, vocabulary %d (architecture from %s)",
        path,
        cfg.model_type,
        cfg.num_layers,
        cfg.hidden_size,
        cfg.vocab_size,
        where,
    )
    record = read_record(run_root(path))
    if (record or {}).get("lora"):  # a LoRA run: its base from the recorded source, adapters merged
        return merged_model_from_run(path, key=key, step=step, remat=remat, cfg=cfg, mesh=mesh)
    if is_weights_dir(path):  # a shipped model: model.json + model.safetensors (+ record.json)
        from upt_jax.models.hf_io import load_hf_checkpoint

        root = run_root(path)
        verify_weights(root)
        model = load_hf_checkpoint(str(root), cfg=cfg, remat=remat, mesh=mesh)
        return model, int((read_json(root / RECORD_FILE) or {}).get("step", 0))
    model = init_model(cfg, 0, remat=remat)  # random init, every param overwritten below
    directory = checkpoints_dir(path)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.state(model))
    try:
        params, step = restore_params(directory, abstract, step=step, return_step=True)
    except CheckpointError as e:
        raise CheckpointError(
            f"{key}={str(path)!r}: cannot restore the {cfg.model_type} model of {cfg.num_layers} layers, "
            f"hidden {cfg.hidden_size}, vocabulary {cfg.vocab_size} that {where} describes from "
            f"{directory}: {e}"
        ) from e
    nnx.update(model, params)
    if mesh is not None:
        shard_model(model, mesh)
    return model, step


# ----------------------------------------------------------------------------- LoRA runs
def lora_config(config) -> LoraConfig | None:
    """The run's ``LoraConfig`` (``config.model.lora``), or ``None`` when rank is 0 or absent."""
    lc = config.model.get("lora") if hasattr(config.model, "get") else None
    if not lc:
        return None
    cfg = LoraConfig.from_dict(lc)
    return cfg if cfg.enabled else None


def run_lora(record: dict | None) -> LoraConfig | None:
    """The ``LoraConfig`` a run's ``model.json`` records, or ``None`` (no adapters)."""
    d = (record or {}).get("lora")
    return LoraConfig.from_dict(d) if d else None


def _base_model(source: dict, cfg, *, key: str, remat: str):
    """The frozen base a LoRA run trained on, rebuilt from its recorded ``source``."""
    from upt_jax.models import init_model, load_hf_checkpoint

    init = (source or {}).get("init")
    if init == "preset":  # the trainer's build_model: seed-0 init of the recorded config
        return init_model(cfg, 0, remat=remat)
    if init == "hf":
        return load_hf_checkpoint(source["hf_dir"], cfg=cfg, remat=remat)
    if init == "checkpoint":
        model, _ = model_from_run(
            source["checkpoint"], key=key, param_dtype=cfg.param_dtype, dtype=cfg.dtype, remat=remat
        )
        return model
    raise ValueError(f"{key}: the LoRA run records no usable source for its base model ({source!r})")


def adapted_model_from_run(path, *, key: str, step: int | None = None, remat: str = "none"):
    """``(model with adapters, step, LoraConfig)`` of the LoRA run directory ``path``: the base
    from the recorded source, the adapters from checkpoint ``step`` (default: the newest usable)."""
    from upt_jax.models import ModelConfig
    from upt_jax.train.checkpoint import CheckpointError, restore_params

    record = read_record(run_root(path))
    cfg = run_lora(record)
    if cfg is None:
        raise ValueError(f"{key}={str(path)!r} is not a LoRA run (its model.json records no adapters)")
    base = _base_model(record["source"], ModelConfig.from_dict(record["model"]), key=key, remat=remat)
    graphdef, adapters, rest = nnx.split(apply_lora(base, cfg), nnx.LoRAParam, ...)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), adapters)
    try:
        adapters, step = restore_params(checkpoints_dir(path), abstract, step=step, return_step=True)
    except CheckpointError as e:
        raise CheckpointError(
            f"{key}={str(path)!r}: cannot restore the LoRA adapters (r={cfg.rank}, targets {cfg.targets!r}): {e}"
        ) from e
    return nnx.merge(graphdef, adapters, rest), step, cfg


def merged_model_from_run(path, *, key: str, step: int | None = None, remat: str = "none", cfg=None, mesh=None):
    """``(model, step)``: a LoRA run's model with its adapters merged into the base weights
    (`merge_lora`), in ``cfg``'s dtypes when given (another stage may train in another precision)."""
    from upt_jax.models.partition import shard_model
    from upt_jax.models.transformer import abstract_model

    model, step, _ = adapted_model_from_run(path, key=key, step=step, remat=remat)
    model = merge_lora(model)
    if cfg is not None and (cfg.param_dtype, cfg.dtype) != (model.cfg.param_dtype, model.cfg.dtype):
        target = abstract_model(cfg, remat=remat)
        nnx.update(target, jax.tree.map(lambda x, t: x.astype(t.dtype), nnx.state(model), nnx.state(target)))
        model = target
    if mesh is not None:
        shard_model(model, mesh)
    return model, step


def record_for(config, model, tok) -> dict:
    """The ``model.json`` of the run ``config`` with its built ``model`` and tokenizer ``tok``."""
    record = make_record(
        model.cfg,
        source=source_of(config.model),
        tokenizer=config.tokenizer,
        tok=tok,
        template=config.data.template,
        system_prompt=config.data.get("system_prompt"),
    )
    lora = lora_config(config)
    if lora is not None:  # checkpoints hold the adapters only: the base is rebuilt from "source"
        record["lora"] = lora.to_dict()
    return record


def _read_run_config(run_dir):
    import ml_collections

    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no config.json (is it an upt_jax run directory?)")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def run_tokenizer(run_dir, tokenizer: str | None = None):
    """``(tokenizer, config, spec)`` of an upt_jax run directory: the tokenizer it recorded (or
    ``tokenizer``), its ``config.json`` and the tokenizer's spec."""
    from pathlib import Path

    from upt_jax.data import load_tokenizer

    config = _read_run_config(Path(run_dir))
    spec = tokenizer or (recorded_tokenizer(run_dir) or {}).get("tokenizer") or config.get("tokenizer", "char")
    return load_tokenizer(spec), config, spec


def load_run_model(run_dir, *, step: int | None = None, tokenizer: str | None = None):
    """``(model, tokenizer, config, step)`` from an upt_jax run directory, or a shipped model
    directory (`upt_jax.bases`: ``model.json`` + ``model.safetensors``; its ``config`` then holds
    only ``name``, ``tokenizer`` and ``data.template`` / ``data.system_prompt``, its step the record's).

    The model is rebuilt with the architecture the run recorded (its ``model.json``; for older
    runs its ``config.json``) and the params of ``checkpoints/<step>`` (default: the newest step
    that restores; unusable newer steps are logged and skipped), by the same `model_from_run` as a
    stage hand-off. The tokenizer is the one the run recorded; ``tokenizer`` overrides it (an
    error if it has more tokens than the model's vocabulary).
    """
    from pathlib import Path

    from upt_jax.data import load_tokenizer

    run_dir = Path(run_dir)
    if is_weights_dir(run_dir):  # a shipped model (upt_jax.bases): model.json + model.safetensors
        import ml_collections

        rec = recorded_tokenizer(run_dir) or {}
        config = ml_collections.ConfigDict(
            dict(
                name=run_dir.resolve().name,
                tokenizer=rec.get("tokenizer") or "char",
                data=dict(template=rec.get("template") or "zero", system_prompt=rec.get("system_prompt")),
            )
        )
    else:
        config = _read_run_config(run_dir)
        if not (run_dir / "checkpoints").is_dir():
            raise FileNotFoundError(f"{run_dir} has no checkpoints/ directory")
    spec = tokenizer or (recorded_tokenizer(run_dir) or {}).get("tokenizer") or config.get("tokenizer", "char")
    tok = load_tokenizer(spec)
    special = dict(eos_token_id=tok.eos_id, bos_token_id=tok.bos_id, pad_token_id=tok.pad_id)
    model, step = model_from_run(
        run_dir, key="--run-dir", step=step, vocab_size=tok.vocab_size, special=special, tokenizer=f"tokenizer {spec!r}"
    )
    return model, tok, config, step
