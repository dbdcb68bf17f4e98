"""``upt export RUN_DIR OUT_DIR``: a run directory's checkpoint as a Hugging Face directory.

The exported directory holds what ``transformers`` (and vLLM, TRL, …) load::

    config.json                 the recorded architecture (ModelConfig.to_hf_dict)
    model.safetensors           the checkpoint's params (or shards + model.safetensors.index.json)
    tokenizer.json, tokenizer_config.json, …   the run's tokenizer, with its chat template
    generation_config.json      eos (every stop id the trainer stopped on), pad and bos ids
    upt_jax_export.json         where it came from: run directory, step, prompt template, system prompt

The model is rebuilt by `run_model.model_from_run`, the same helper as every stage hand-off and
``upt eval --run-dir``, so the architecture is the one the run recorded in ``model.json``.

A LoRA run (``model.lora.rank > 0``) exports its adapters in the PEFT layout instead
(``adapter_config.json`` + ``adapter_model.safetensors``, `export_adapters`), or with
``merge_lora`` (``upt export --merge-lora``) the full model, adapters merged into the base weights.

Example::

    >>> from upt_jax.train.export import export_run
    >>> export_run("runs/sft", "exports/sft")           # newest usable checkpoint
    >>> import transformers
    >>> m = transformers.AutoModelForCausalLM.from_pretrained("exports/sft")
"""

from __future__ import annotations

import json
import logging
import os

log = logging.getLogger(__name__)

__all__ = ["EXPORT_NOTE", "export_adapters", "export_run", "generation_config"]

EXPORT_NOTE = "upt_jax_export.json"


def generation_config(tok, model_cfg) -> dict:
    """The ``generation_config.json`` of an export: generation stops on every id ``tok`` stops on
    (its EOS, a ``generation_config.json`` beside it, known end-of-turn markers such as
    ``<|im_end|>``), within the model's vocabulary; ``pad_token_id`` and ``bos_token_id`` from
    ``tok`` (pad falls back to the first stop id)."""
    stops = [int(i) for i in tok.stop_ids if i is not None and int(i) < model_cfg.vocab_size]
    pad = tok.pad_id if tok.pad_id is not None else (stops[0] if stops else None)
    out = {"eos_token_id": stops[0] if len(stops) == 1 else stops, "pad_token_id": pad}
    if tok.bos_id is not None:
        out["bos_token_id"] = tok.bos_id
    return out


def export_run(
    run_dir,
    out_dir,
    *,
    step: int | None = None,
    dtype: str | None = None,
    max_shard_bytes: int = 4 << 30,
    merge_lora: bool = False,
) -> str:
    """Write the Hugging Face directory ``out_dir`` from checkpoint ``step`` (default: the newest
    usable one) of the upt_jax run directory ``run_dir``; returns ``out_dir``.

    A LoRA run (``model.lora.rank > 0``) exports its adapters in the PEFT layout (`export_adapters`),
    or with ``merge_lora`` the full model with the adapters merged into the base weights.

    Args:
      run_dir: an upt_jax run directory (``model.json`` or ``config.json``, and ``checkpoints/``).
      out_dir: created if missing; existing files of the same names are overwritten.
      step: the checkpoint step (default: the newest that restores).
      dtype: the stored dtype of the weights (``"bfloat16"``, ``"float32"``; default: the params').
      max_shard_bytes: the most bytes per safetensors file (more: shards and an index).
      merge_lora: a LoRA run's merged model instead of its adapters (an error for other runs).
    """
    from upt_jax.train.run_model import load_run_model
    from upt_jax.models import save_hf_checkpoint
    from upt_jax.train.lora_state import run_lora
    from upt_jax.train.run_model import read_record, run_root

    lora = run_lora(read_record(run_root(run_dir)))
    if merge_lora and lora is None:
        raise ValueError(
            f"--merge-lora: {run_dir} trained no LoRA adapters (model.lora.rank = 0); its export "
            "is the full model already (leave --merge-lora out)"
        )
    if lora is not None and not merge_lora:
        return export_adapters(run_dir, out_dir, step=step, dtype=dtype, max_shard_bytes=max_shard_bytes)
    model, tok, config, step = load_run_model(run_dir, step=step)  # a LoRA run's: merged
    out_dir = os.fspath(out_dir)
    save_hf_checkpoint(model, out_dir, max_shard_bytes=max_shard_bytes, dtype=dtype)
    _write_tokenizer_and_note(run_dir, out_dir, tok, model.cfg, config, step)
    log.info("exported %s step %d to %s", run_dir, step, out_dir)
    return out_dir


def export_adapters(
    run_dir, out_dir, *, step: int | None = None, dtype: str | None = None, max_shard_bytes: int = 4 << 30
) -> str:
    """A LoRA run's adapters in the PEFT layout (`upt_jax.models.peft_io`) in ``out_dir``, with the
    run's tokenizer. ``adapter_config.json`` names the base they load onto: the run's HF directory
    (``model.init=hf``), else the base's own HF export, written to ``out_dir/base`` (a preset's
    random init, a parent run's model; QLoRA: the dequantised base the adapters were trained on)::

        base = transformers.AutoModelForCausalLM.from_pretrained(<base_model_name_or_path>)
        model = peft.PeftModel.from_pretrained(base, out_dir)
    """
    from upt_jax.train.run_model import run_tokenizer
    from upt_jax.models import save_hf_checkpoint
    from upt_jax.models.lora import merge_lora
    from upt_jax.models.peft_io import save_peft_adapter
    from upt_jax.train.lora_state import adapted_model_from_run
    from upt_jax.train.run_model import read_record, run_root

    out_dir = os.fspath(out_dir)
    model, step, cfg = adapted_model_from_run(run_dir, key="RUN_DIR", step=step)
    source = read_record(run_root(run_dir))["source"]
    tok, config, _ = run_tokenizer(run_dir)
    if source.get("init") == "hf" and cfg.quantize == "none":
        base_path = source["hf_dir"]
    else:
        base_path = os.path.abspath(os.path.join(out_dir, "base"))
        base = merge_lora(model, adapters=False)
        save_hf_checkpoint(base, base_path, max_shard_bytes=max_shard_bytes, dtype=dtype)
        _write_tokenizer_and_note(run_dir, base_path, tok, base.cfg, config, step)
    save_peft_adapter(model, out_dir, cfg, base_model_name_or_path=base_path)
    _write_tokenizer_and_note(run_dir, out_dir, tok, model.cfg, config, step)
    log.info(
        "exported the LoRA adapters (r=%d) of %s step %d to %s (base: %s)", cfg.rank, run_dir, step, out_dir, base_path
    )
    return out_dir


def _write_tokenizer_and_note(run_dir, out_dir: str, tok, model_cfg, config, step: int) -> None:
    """The run's tokenizer (with its recorded chat template), ``generation_config.json`` and
    ``upt_jax_export.json`` into ``out_dir``."""
    from upt_jax.train.run_model import recorded_tokenizer

    rec = recorded_tokenizer(run_dir) or {}
    if rec.get("chat_template") and not getattr(tok.hf, "chat_template", None):
        tok.hf.chat_template = rec["chat_template"]  # the tokenizer directory lost it: the recorded one
    tok.hf.save_pretrained(out_dir)
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump(generation_config(tok, model_cfg), f, indent=2)
    data = config.get("data") or {}
    note = {
        "run_dir": os.path.abspath(os.fspath(run_dir)),
        "step": int(step),
        "experiment": config.get("name"),
        "template": data.get("template"),
        "system_prompt": data.get("system_prompt"),
        "tokenizer": rec.get("tokenizer") or config.get("tokenizer"),
    }
    with open(os.path.join(out_dir, EXPORT_NOTE), "w") as f:
        json.dump(note, f, indent=2)
    if note["template"] != "chat":
        log.info(
            "%s was trained on the %r prompt template, not the chat template: prompt the export the "
            "same way (upt_jax.data.templates.render_prompt) for the behaviour it learned",
            run_dir,
            note["template"],
        )
