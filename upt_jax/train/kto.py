"""KTO in ``mode=preference``: unpaired labelled rows, and the reference point ``z₀`` per step.

A record read with ``task="kto"`` (`upt_jax.data.readers`) is one row: its ``question`` as the
prompt, its ``completion`` as the response and its ``label`` (desirable or not). A record with a
chosen/rejected pair instead (the synthetic task's, see ``records.preference_pair``) gives one
row too: its chosen response (desirable) at even positions of the step, its rejected one
(undesirable) at odd positions, so a step holds both kinds.

``z₀`` (KTO's reference point, `upt_jax.upge.kto_reference_point`) is estimated as the paper and
TRL do, on mismatched pairs: row ``i``'s prompt with row ``i + 1``'s completion (cyclically),
``max(0, mean_i Σ_t log π_θ/π_ref)``, without gradient, once per step before the update.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from upt_jax.train.batching import pack_rows

_KL_KEYS = ("kl_tokens", "kl_attention_mask", "kl_mask")


def uses_kto(recipe) -> bool:
    """Whether a part of ``recipe`` reads KTO's labels (``kto_label``: its rows are unpaired and
    labelled), from the parts' declared needs (``upge.requirements``), not their names."""
    from upt_jax import upge

    return "kto_label" in upge.requirements(recipe).batch


def examples(records, pair_of) -> list[tuple[str, bool]]:
    """``(completion, label)`` of each record: its own, or from ``pair_of(record) -> (chosen,
    rejected)``: the chosen one at even positions, the rejected one at odd positions."""
    out = []
    for i, r in enumerate(records):
        if r.get("completion") is not None and r.get("label") is not None:
            out.append((r["completion"], bool(r["label"])))
        else:
            chosen, rejected = pair_of(r)
            out.append((chosen, True) if i % 2 == 0 else (rejected, False))
    return out


def kto_rows(
    prompts: list[list[int]], completions: list[list[int]], labels: list[bool], *, pad_id: int
) -> dict[str, np.ndarray]:
    """The step's rows (``pack_rows`` layout, ``kto_label [B]``) and the mismatched rows of ``z₀``
    (``kl_tokens``, ``kl_attention_mask``, ``kl_mask`` ``[B, L']``: prompt ``i``, completion ``i+1``)."""
    rows = pack_rows(prompts, completions, pad_id=pad_id)
    rows["kto_label"] = np.asarray(labels, np.float32)
    shifted = completions[1:] + completions[:1]
    kl = pack_rows(prompts, shifted, pad_id=pad_id)
    rows.update(kl_tokens=kl["tokens"], kl_attention_mask=kl["attention_mask"], kl_mask=kl["mask"])
    return rows


def with_reference_point(batch: dict, logp_fn, params, ref_params, *, ref_logp_fn=None):
    """``batch`` without the mismatched rows, with ``kto_z0 [B]`` (``z₀`` on every row); and ``z₀``.

    ``logp_fn(params, tokens, attention_mask) -> [B, L]`` token log-probs (the trainer's); the
    reference's are ``logp_fn(ref_params, …)``, or ``ref_logp_fn(tokens, attention_mask)`` when
    given (LoRA: the policy with its adapters off, no second copy of the model).
    """
    from upt_jax import upge

    kl = {k: batch[k] for k in _KL_KEYS}
    out = {k: v for k, v in batch.items() if k not in _KL_KEYS}
    lp = logp_fn(params, kl["kl_tokens"], kl["kl_attention_mask"])
    ref = (
        ref_logp_fn(kl["kl_tokens"], kl["kl_attention_mask"])
        if ref_logp_fn is not None
        else logp_fn(ref_params, kl["kl_tokens"], kl["kl_attention_mask"])
    )
    z0 = upge.kto_reference_point(lp, ref, kl["kl_mask"])
    out["kto_z0"] = jnp.full(kl["kl_mask"].shape[:1], z0, jnp.float32)
    return out, z0
