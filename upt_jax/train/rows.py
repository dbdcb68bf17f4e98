"""Rows for the update step: the online stage that assembles a step's groups (rollouts, and each
question's demonstration where the recipe trains on one) into rows (`assemble_rows`), and the
offline row builders (SFT demonstrations, preference pairs, KTO's unpaired rows, language-modelling
text). Each returns `Rows` (``pack_rows`` output: ``tokens``, ``attention_mask``, ``mask``
``[B, L]`` …, numpy arrays) and host metrics, and `pack_for_update` packs them for the update when
``train.pack_sequences`` is on."""

from __future__ import annotations

import dataclasses
from collections.abc import MutableMapping

import numpy as np

from upt_jax.train.batching import pack_rows
from upt_jax.train.kto import examples, kto_rows
from upt_jax.train.records import preference_pair

__all__ = [
    "Rows",
    "assemble_rows",
    "text_rows",
    "preference_rows",
    "kto_preference_rows",
    "sft_rows",
    "demo_ids",
    "group_rows",
    "group_metrics",
    "kept_set_rows",
    "pack_for_update",
    "check_shared_prompts",
]

ROW_KEYS = ("tokens", "attention_mask", "mask")


@dataclasses.dataclass(eq=False)
class Rows(MutableMapping):
    """A step's rows on the host, before they are placed: numpy ``columns``, each with the rows
    first (``[B, L]`` or ``[B]``), read and written as a mapping (``rows["tokens"]``).

    Always ``tokens``, ``attention_mask`` (1 on real tokens) and ``mask`` (1 on the tokens trained
    on) ``[B, L]``; then what the rows' kind adds: rollouts ``old_logp``, ``rollout_logp`` ``[B, L]``,
    ``rewards``, ``is_demo`` ``[B]`` (`group_rows`); ``truncated`` ``[B]`` until the step drops it."""

    columns: dict

    def __post_init__(self):
        missing = [k for k in ROW_KEYS if k not in self.columns]
        if missing:
            raise ValueError(f"Rows need {list(ROW_KEYS)}; missing {missing}")
        shapes = {k: np.shape(self.columns[k]) for k in ROW_KEYS}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"Rows: {list(ROW_KEYS)} must have one shape [B, L], got {shapes}")

    @property
    def tokens(self) -> np.ndarray:
        return self.columns["tokens"]

    @property
    def attention_mask(self) -> np.ndarray:
        return self.columns["attention_mask"]

    @property
    def mask(self) -> np.ndarray:
        return self.columns["mask"]

    def __getitem__(self, key):
        return self.columns[key]

    def __setitem__(self, key, value):
        self.columns[key] = value

    def __delitem__(self, key):
        del self.columns[key]

    def __iter__(self):
        return iter(self.columns)

    def __len__(self) -> int:
        return len(self.columns)


def assemble_rows(
    groups,
    tok,
    *,
    demos: bool = False,
    recipe_name: str = "",
    replay: bool = False,
    process_reward=None,
    min_prompt_len: int = 0,
) -> tuple[Rows, dict]:
    """The online stage after scoring: a step's groups (`upt_jax.train.rollouts.ScoredRollouts`)
    as `Rows` (`group_rows`; with ``demos`` each question's demonstration last in its group,
    ``recipe_name`` naming the recipe in the error when a record has none; ``replay``: kept-set
    replay) and host metrics (`group_metrics`, the draw's ``info``). The gate that routes a group
    to the RL or the SFT term is applied in the jitted loss, from these rows.

    ``process_reward`` (a `upt_jax.train.prm.ProcessReward`): per-step PRM rewards at step ends,
    ``step_rewards``/``step_mask`` ``[B, L]``, and ``prm/step_reward_mean``."""
    info = dict(getattr(groups, "info", {}))
    ids = [demo_ids(tok, g["record"], recipe_name) for g in groups] if demos else None
    rows = group_rows(groups, pad_id=tok.pad_id, demos=ids, replay=replay, min_prompt_len=min_prompt_len)
    if process_reward is not None:  # per-step PRM rewards at step ends (grpo_process)
        rows["step_rewards"], rows["step_mask"] = process_reward.step_rewards(rows)
        info["prm/step_reward_mean"] = float(rows["step_rewards"].sum() / max(rows["step_mask"].sum(), 1))
    info.update(group_metrics(groups))  # gate/sft_frac: the jitted step's gate (step.sft_gate_metric)
    return rows, info


def text_rows(tok, records) -> tuple[Rows, dict]:
    """Language-modelling rows: ``text ⧺ EOS`` (a packed record: each document ⧺ EOS, one
    after the other), trained on every token but the first, which is the one-column prompt
    (no BOS is added: prompts at rollout and evaluation time have none either)."""

    def encode(text):  # one document, or a packed list of them, each ending in EOS
        docs = [text] if isinstance(text, str) else list(text)
        return [i for d in docs for i in tok.encode(d) + [tok.eos_id]]

    ids = [encode(r["text"]) for r in records]
    rows = Rows(pack_rows([x[:1] for x in ids], [x[1:] for x in ids], pad_id=tok.pad_id, prompt_len=1))
    return rows, {"response_length": float(np.mean([len(x) - 1 for x in ids]))}


def preference_rows(tok, records, prompts) -> tuple[Rows, dict]:
    """Rows ``2i`` (chosen) and ``2i + 1`` (rejected) of each record's `preference_pair`."""
    pairs = [preference_pair(r) for r in records]
    resp = [tok.encode(x) + [tok.eos_id] for pair in pairs for x in pair]
    rows = Rows(pack_rows([p for p in prompts for _ in range(2)], resp, pad_id=tok.pad_id, logit_columns=True))
    return rows, {"response_length": float(np.mean([len(x) for x in resp]))}


def kto_preference_rows(tok, records, prompts) -> tuple[Rows, dict]:
    """KTO's unpaired rows (`upt_jax.train.kto`): a (prompt, completion, desirable) row each."""
    ex = examples(records, preference_pair)
    resp = [tok.encode(x) + [tok.eos_id] for x, _ in ex]
    rows = Rows(kto_rows(prompts, resp, [y for _, y in ex], pad_id=tok.pad_id))
    return rows, {
        "response_length": float(np.mean([len(x) for x in resp])),
        "kto/desirable_frac": float(np.mean([y for _, y in ex])),
    }


def sft_rows(tok, records, *, template: str, system_prompt) -> tuple[Rows, dict]:
    """Demonstration rows; a chat row trains on its assistant turns only (`upt_jax.data.chat`)."""
    from upt_jax.data.chat import sft_example

    ex = [sft_example(tok, r, template=template, system_prompt=system_prompt) for r in records]
    rows = Rows(
        pack_rows(
            [e[0] for e in ex],
            [e[1] for e in ex],
            pad_id=tok.pad_id,
            response_values=dict(loss_mask=[e[2] for e in ex]),
            logit_columns=True,
        )
    )
    rows["mask"] = rows["mask"] * rows.pop("loss_mask")
    return rows, {"response_length": float(np.mean([len(e[1]) for e in ex]))}


def demo_ids(tok, record, recipe_name: str) -> list[int]:
    """A record's demonstration as token ids, ending in EOS."""
    demo = record.get("demonstration")
    if not demo:
        raise ValueError(f"record {record.get('id')} has no demonstration, which recipe {recipe_name} needs")
    return tok.encode(demo) + [tok.eos_id]


def group_rows(
    groups, *, pad_id: int, demos: list | None = None, replay: bool = False, min_prompt_len: int = 0
) -> Rows:
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
    rows = Rows(
        pack_rows(
            prompts,
            resp,
            pad_id=pad_id,
            response_values=dict(old_logp=logp, rollout_logp=rollout_logp, rollout_threshold=threshold),
            min_prompt_len=min_prompt_len,
            logit_columns=True,
        )
    )
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
    return {
        "old_logp": rows["rollout_logp"],
        "rollout_threshold": np.where(rows["mask"] > 0, thr, -np.inf).astype(np.float32),
    }


def pack_for_update(rows: Rows, *, row_multiple: int, num_microbatches: int, group_size: int) -> tuple[Rows, dict]:
    """``rows`` plus their sequences packed for the update step (``pack_sequences``: packed rows
    split over data × fsdp (``row_multiple``) and, per micro-batch, like ``split_microbatches``),
    and ``pack/*`` metrics."""
    from upt_jax.train.batching import pack_sequences

    packed = pack_sequences(
        rows["tokens"],
        rows["attention_mask"],
        row_multiple=row_multiple,
        num_microbatches=num_microbatches,
        group_size=group_size,
    )
    real = float(np.sum(rows["attention_mask"]))
    info = {
        "pack/rows": float(packed["packed_tokens"].shape[0]),
        "pack/len": float(packed["packed_tokens"].shape[1]),
        "pack/padding_frac": 1.0 - real / packed["packed_tokens"].size,
        "pack/padding_frac_unpacked": 1.0 - real / rows["attention_mask"].size,
    }
    return Rows(dict(rows, **packed)), info


def check_shared_prompts(rows, group_size: int) -> None:
    """Raise unless every group of ``group_size`` contiguous rows has the same prompt columns
    (``tokens`` and ``attention_mask`` before the ``logit_columns``): what ``share_prompt`` assumes."""
    if "logit_columns" not in rows or group_size < 2:
        return
    tokens, attn = np.asarray(rows["tokens"]), np.asarray(rows["attention_mask"])
    cols = np.asarray(rows["logit_columns"])
    p = tokens.shape[1] - cols.shape[1]
    if np.any(cols != np.arange(p, tokens.shape[1])):
        raise ValueError("share_prompt: logit_columns must be every row's trailing response columns (pack_rows)")
    for name, x in (("tokens", tokens), ("attention_mask", attn)):
        g = x[:, :p].reshape(-1, group_size, p)
        bad = np.flatnonzero(np.any(g != g[:, :1], axis=(1, 2)))
        if bad.size:
            raise ValueError(
                f"share_prompt: group {int(bad[0])} of {group_size} rows has different prompt {name}; "
                "train.share_prompt needs each group's rows to share one prompt"
            )
