"""What an evaluation reads: a Hugging Face model and its prompt template, the user's evaluation
files, tier names. Pure reading (data, models), no training: ``upt eval``
(`upt_jax.eval_cli`) and the in-training evaluation (`upt_jax.train.in_training`) both use it.
A run directory's model is `upt_jax.train.run_model.load_run_model`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

__all__ = ["load_hf_model", "hf_template", "data_suites", "parse_tiers"]


def load_hf_model(
    hf_dir: str | os.PathLike, *, param_dtype: str = "float32", dtype: str | None = None, tokenizer: str | None = None
):
    """``(model, tokenizer)`` from a Hugging Face directory (tokenizer from the same directory
    unless ``tokenizer`` names another, or ``"char"``)."""
    from upt_jax.data import load_tokenizer
    from upt_jax.models import load_hf_checkpoint

    model = load_hf_checkpoint(hf_dir, param_dtype=param_dtype, dtype=dtype)
    return model, load_tokenizer(tokenizer or hf_dir)


def hf_template(hf_dir, tok) -> str:
    """The prompt template of a Hugging Face directory: the one ``upt export`` recorded in its
    ``upt_jax_export.json``; else ``chat`` when its tokenizer has a chat template (other than the
    built-in character tokenizer's: the synthetic task's models are trained on ``zero``); else ``zero``."""
    from upt_jax.data.tokenizer import CHAR_CHAT_TEMPLATE

    note = Path(hf_dir) / "upt_jax_export.json"
    if note.is_file():
        recorded = json.loads(note.read_text()).get("template")
        if recorded:
            return recorded
    chat = getattr(tok.hf, "chat_template", None)
    return "chat" if chat and chat != CHAR_CHAT_TEMPLATE else "zero"


def data_suites(paths: Sequence[str], *, verifier: str = "math", need_answer: bool = True) -> dict[str, list[dict]]:
    """``{file stem: records}`` of the user's evaluation files (any layout `upt_jax.data.layouts`
    reads; repeated questions kept). ``need_answer=False`` (reward functions score them): rows need
    only a prompt."""
    from upt_jax.data import DataConfig, load_records

    out = {}
    for path in paths:
        name = Path(path.rstrip("/")).name.split(".")[0]
        cfg = DataConfig(path=path, task="eval" if need_answer else "prompt", verifier=verifier, duplicate_ids="keep")
        out[name if name not in out else path] = load_records(cfg)[0]
    return out


def parse_tiers(values: Sequence[str] | None) -> tuple[str, ...]:
    """Tier names, comma or space separated; ``train``, ``ood``, ``all``, ``easy``, ``medium``,
    ``hard`` expand to the built-in ``arith`` family's groups; a task family's name (``arith_hint``)
    to all its tiers and ``family/level`` (``arith_hint/sft``) to its tiers at that level;
    ``module:tier`` imports a user's task module first (`upt_jax.data.tasks`)."""
    from upt_jax.data import synthetic, tasks

    groups = {
        "train": synthetic.TRAIN_TIERS,
        "ood": synthetic.OOD_TIERS,
        "all": synthetic.TRAIN_TIERS + synthetic.OOD_TIERS,
        "easy": synthetic.EASY_TIERS,
        "medium": synthetic.MEDIUM_TIERS,
        "hard": synthetic.HARD_TIERS,
    }
    for family in tasks.task_names():
        fam = tasks.get_task(family)
        groups[family] = fam.tier_names
        groups.update({f"{family}/{lv}": fam.tiers_at(lv) for lv in tasks.LEVELS if fam.tiers_at(lv)})
    out: list[str] = []
    for v in values or ():
        for name in filter(None, (x.strip() for x in v.split(","))):
            if name in groups:
                out.extend(groups[name])
                continue
            try:
                out.append(tasks.resolve_tier(name))
            except KeyError as e:
                raise SystemExit(f"upt eval: {e.args[0]}; or groups {', '.join(groups)}") from None
    return tuple(dict.fromkeys(out))
