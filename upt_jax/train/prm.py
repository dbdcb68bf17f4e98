"""Process reward models (PRM): per-step correctness from the synthetic task's programmatic steps.

A demonstration is one step per line. A *corrupted* demonstration changes one digit of one
line's result (step ``k``); steps before ``k`` are labelled correct (1), step ``k`` and every
later step wrong (0), as in process supervision (Lightman et al. 2023) where a solution is wrong
from its first mistake on. The PRM is a ``RewardModel`` whose score at each step's last token
(the newline, or EOS for the last step) is trained with binary cross-entropy on these labels.

``config.mode = "prm"`` (``experiments/prm.py``) trains one; per-step accuracy on held-out
demonstrations (a different seed, half of them corrupted) is logged. A trained PRM scores rollouts
with `upt_jax.train.reward_scorers.ProcessReward` (re-exported here).
"""

from __future__ import annotations

import random
import re

import jax
import jax.numpy as jnp
import numpy as np

# a trained PRM scoring rollouts' steps, re-exported: it lives below the reward-model trainer
from upt_jax.train.reward_scorers import ProcessReward, step_ends  # noqa: F401


def corrupt_steps(demonstration: str, rng: random.Random) -> tuple[str, list[int]]:
    """``(text, labels)``: one line's first ``=``-result digit changed, labels 1 before it, 0 from it.

    Lines without a computed result (headers such as ``46*7:``) are never chosen; the final
    ``\\boxed{}`` line counts as a step (it inherits the error).
    """
    lines = demonstration.split("\n")
    candidates = [i for i, line in enumerate(lines) if re.search(r"=\d", line)]
    if not candidates:
        raise ValueError("demonstration has no computed step to corrupt")
    k = rng.choice(candidates)
    m = re.search(r"=(\d)", lines[k])
    pos = m.start(1)
    digit = lines[k][pos]
    wrong = rng.choice([d for d in "0123456789" if d != digit])
    lines[k] = lines[k][:pos] + wrong + lines[k][pos + 1 :]
    return "\n".join(lines), [1] * k + [0] * (len(lines) - k)


def step_label_row(response_ids: list[int], labels: list[int], newline_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-token ``(targets, weights)`` ``[R]``: the label of step ``j`` at its last token.

    Steps end at each newline and at the last token of the response (EOS)."""
    targets = np.zeros(len(response_ids), np.float32)
    weights = np.zeros(len(response_ids), np.float32)
    ends = [i for i, t in enumerate(response_ids) if t == newline_id] + [len(response_ids) - 1]
    if len(ends) != len(labels):
        raise ValueError(f"{len(ends)} step ends but {len(labels)} labels")
    for e, lab in zip(ends, labels):
        targets[e], weights[e] = lab, 1.0
    return targets, weights


def step_label_rows(tok, records: list[dict], prompts: list[list[int]], seed: int) -> dict[str, np.ndarray]:
    """The records' demonstrations, each corrupted at one step with probability ½ (`corrupt_steps`;
    ``seed`` fixes which and where), after their ``prompts`` (token ids), packed (`pack_rows`):
    ``tokens``, ``attention_mask``, ``mask`` and the per-token ``step_targets``/``step_weights``
    ``[N, T]`` (`step_label_row`)."""
    from upt_jax.train.batching import pack_rows

    newline = tok.encode("\n")
    if len(newline) != 1:
        raise ValueError("the PRM needs a tokenizer with a single newline token")
    rng = random.Random(seed)
    responses, targets, weights = [], [], []
    for r in records:
        demo = r.get("demonstration")
        if not demo:
            raise ValueError(f"record {r.get('id')} has no demonstration to label steps of")
        if rng.random() < 0.5:
            text, labels = corrupt_steps(demo, rng)
        else:
            text, labels = demo, [1] * (demo.count("\n") + 1)
        ids = tok.encode(text) + [tok.eos_id]
        tg, w = step_label_row(ids, labels, newline[0])
        responses.append(ids)
        targets.append(tg)
        weights.append(w)
    rows = pack_rows(
        prompts, responses, pad_id=tok.pad_id, response_values=dict(step_targets=targets, step_weights=weights)
    )
    rows.pop("truncated")
    return rows


def prm_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array):
    """Binary cross-entropy at step ends.

    Args:
      logits, targets, weights: ``[B, T]`` (weights 1 at step ends).
    Returns:
      ``(loss_sum [], num_steps [], step_accuracy [])``.
    """
    bce = -(targets * jax.nn.log_sigmoid(logits) + (1 - targets) * jax.nn.log_sigmoid(-logits))
    n = jnp.sum(weights)
    acc = jnp.sum(weights * ((logits > 0) == (targets > 0.5))) / jnp.maximum(n, 1.0)
    return jnp.sum(weights * bce), n, acc


def prm_objective():
    """``Objective`` for a ``RewardModel`` on rows with ``step_targets``/``step_weights`` ``[B, T]``."""
    from upt_jax.train.step import Objective

    def sums(model, batch):
        logits = model.token_scores(batch["tokens"], batch["attention_mask"])
        s, _, acc = prm_loss(logits, batch["step_targets"], batch["step_weights"])
        return {"prm": s}, {"step_accuracy": acc}

    return Objective(denominators=lambda b: {"prm": jnp.sum(b["step_weights"])}, sums=sums)
