"""Rows for the update step: the online stage that assembles a step's groups (rollouts, and each
question's demonstration where the recipe trains on one) into rows, and the offline row builders
(SFT demonstrations, preference pairs, KTO's unpaired rows, language-modelling text). Each returns
``pack_rows`` output (``tokens``, ``attention_mask``, ``mask`` ``[B, L]`` …) as numpy arrays, and
`pack_for_update` packs them for the update when ``train.pack_sequences`` is on."""
from __future__ import annotations

import numpy as np

from upt_jax.train.batching import pack_rows
from upt_jax.train.kto import examples, kto_rows
from upt_jax.train.records import preference_pair

__all__ = ["text_rows", "preference_rows", "kto_preference_rows", "sft_rows", "demo_ids", "group_rows",
           "group_metrics", "kept_set_rows", "pack_for_update"]


def text_rows(tok, records) -> tuple[dict, dict]:
    """Language-modelling rows: ``text ⧺ EOS`` (a packed record: each document ⧺ EOS, one
    after the other), trained on every token but the first, which is the one-column prompt
    (no BOS is added: prompts at rollout and evaluation time have none either)."""

    def encode(text):  # one document, or a packed list of them, each ending in EOS
        docs = [text] if isinstance(text, str) else list(text)
        return [i for d in docs for i in tok.encode(d) + [tok.eos_id]]

    ids = [encode(r["text"]) for r in records]
    rows = pack_rows([x[:1] for x in ids], [x[1:] for x in ids], pad_id=tok.pad_id, prompt_len=1)
    return rows, {"response_length": float(np.mean([len(x) - 1 for x in ids]))}


def preference_rows(tok, records, prompts) -> tuple[dict, dict]:
    """Rows ``2i`` (chosen) and ``2i + 1`` (rejected) of each record's `preference_pair`."""
    pairs = [preference_pair(r) for r in records]
    resp = [tok.encode(x) + [tok.eos_id] for pair in pairs for x in pair]
    rows = pack_rows([p for p in prompts for _ in range(2)], resp, pad_id=tok.pad_id)
    return rows, {"response_length": float(np.mean([len(x) for x in resp]))}


def kto_preference_rows(tok, records, prompts) -> tuple[dict, dict]:
    """KTO's unpaired rows (`upt_jax.train.kto`): a (prompt, completion, desirable) row each."""
    ex = examples(records, preference_pair)
    resp = [tok.encode(x) + [tok.eos_id] for x, _ in ex]
    rows = kto_rows(prompts, resp, [y for _, y in ex], pad_id=tok.pad_id)
    return rows, {"response_length": float(np.mean([len(x) for x in resp])),
                  "kto/desirable_frac": float(np.mean([y for _, y in ex]))}


def sft_rows(tok, records, *, template: str, system_prompt) -> tuple[dict, dict]:
    """Demonstration rows; a chat row trains on its assistant turns only (`upt_jax.data.chat`)."""
    from upt_jax.data.chat import sft_example

    ex = [sft_example(tok, r, template=template, system_prompt=system_prompt) for r in records]
    rows = pack_rows([e[0] for e in ex], [e[1] for e in ex], pad_id=tok.pad_id,
                     response_values=dict(loss_mask=[e[2] for e in ex]))
    rows["mask"] = rows["mask"] * rows.pop("loss_mask")
    return rows, {"response_length": float(np.mean([len(e[1]) for e in ex]))}


def demo_ids(tok, record, recipe_name: str) -> list[int]:
    """A record's demonstration as token ids, ending in EOS."""
    demo = record.get("demonstration")
    if not demo:
        raise ValueError(f"record {record.get('id')} has no demonstration, which recipe {recipe_name} needs")
    return tok.encode(demo) + [tok.eos_id]


def group_rows(groups, *, pad_id: int, demos: list | None = None, replay: bool = False) -> dict:
    """The rows of a step's groups: each group's ``n`` rollouts, then its demonstration
    (``demos[g]``, token ids) when ``demos`` is given: rows ``[G · (n + 1), L]``, a
    demonstration last in its group, with behaviour log-probs 0 (unknown behaviour policy),
    reward 1 and ``is_demo``. ``replay``: kept-set replay (`kept_set_rows`)."""
    prompts, resp, logp, rollout_logp, threshold, rewards, is_demo = [], [], [], [], [], [], []
    for k, g in enumerate(groups):
        for i in range(len(g["responses"])):
            prompts.append(g["prompt"])
            resp.append(g["responses"][i])
            logp.append(g["logp"][i])
            rollout_logp.append(g["sampling_logp"][i])
            threshold.append(g["thresholds"][i])
            rewards.append(g["rewards"][i])
            is_demo.append(False)
        if demos is not None:
            demo = demos[k]
            prompts.append(g["prompt"])
            resp.append(demo)
            logp.append(np.zeros(len(demo), np.float32))  # unknown behaviour policy
            rollout_logp.append(np.zeros(len(demo), np.float32))
            threshold.append(np.full(len(demo), -np.inf, np.float32))  # the whole vocabulary
            rewards.append(1.0)  # a demonstration is correct
            is_demo.append(True)
    rows = pack_rows(prompts, resp, pad_id=pad_id,
                     response_values=dict(old_logp=logp, rollout_logp=rollout_logp, rollout_threshold=threshold))
    rows.update(kept_set_rows(rows, replay))
    rows["rewards"] = np.asarray(rewards, np.float32)
    rows["is_demo"] = np.asarray(is_demo, bool)
    return rows


def group_metrics(groups) -> dict:
    """Host-side metrics of a step's groups: rewards, pass rates (reward > 0.5), response lengths,
    the finished fraction, and rewards per tier."""
    from upt_jax.train.metrics_log import per_tier_means

    rewards = np.stack([g["rewards"] for g in groups])
    pass_rate = (rewards > 0.5).mean(axis=1)
    lengths = np.asarray([len(x) for g in groups for x in g["responses"]])
    info = {
        "reward/mean": float(rewards.mean()),
        "pass_rate/mean": float(pass_rate.mean()),
        "pass_rate/all_zero_frac": float(np.mean(pass_rate == 0)),
        "pass_rate/all_one_frac": float(np.mean(pass_rate == 1)),
        "response_length": float(lengths.mean()),
        "finished_frac": float(np.mean([f for g in groups for f in g["finished"]])),
    }
    info.update(per_tier_means("reward", [g["record"].get("tier") for g in groups], rewards))
    return info


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


def pack_for_update(rows: dict, *, row_multiple: int, num_microbatches: int, group_size: int) -> tuple[dict, dict]:
    """``rows`` plus their sequences packed for the update step (``pack_sequences``: packed rows
    split over data × fsdp (``row_multiple``) and, per micro-batch, like ``split_microbatches``),
    and ``pack/*`` metrics."""
    from upt_jax.train.batching import pack_sequences

    packed = pack_sequences(rows["tokens"], rows["attention_mask"], row_multiple=row_multiple,
                            num_microbatches=num_microbatches, group_size=group_size)
    real = float(np.sum(rows["attention_mask"]))
    info = {"pack/rows": float(packed["packed_tokens"].shape[0]),
            "pack/len": float(packed["packed_tokens"].shape[1]),
            "pack/padding_frac": 1.0 - real / packed["packed_tokens"].size,
            "pack/padding_frac_unpacked": 1.0 - real / rows["attention_mask"].size}
    return dict(rows, **packed), info
