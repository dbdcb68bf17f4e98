"""Reward-model training: Bradley–Terry on preference pairs (``config.mode = "reward_model"``), or
a process reward model on step labels (``config.mode = "prm"``, see ``upt_jax.train.prm``). A
trained one scores rollouts through `upt_jax.train.reward_scorers` (``load_reward_model``,
``LearnedReward``, re-exported here).

The reward model is the decoder (from ``config.model``: a preset, a HF directory or another
run's checkpoint) with a scalar head read at the last token. Each step takes
``questions_per_step`` pairs (chosen, rejected) — rows ``2i`` and ``2i + 1`` — through the same
jitted, sharded, micro-batched update step as the policy trainer; every ``eval_every`` steps the
pair accuracy on held-out pairs (a different seed) is logged. It runs on the policy's loop
(`upt_jax.train.loop.Loop`): the same config checks (`upt_jax.train.checks.validate`), non-finite
guard, preemption and stop handling, checkpoints, resume, metrics and ``config.json`` writer (a
``gs://`` run directory works).
"""

from __future__ import annotations

import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from upt_jax.train.loop import Loop

# the trained model as a scorer (loading it, scoring rollouts), re-exported: it lives below the trainer
from upt_jax.train.reward_scorers import LearnedReward, load_reward_model  # noqa: F401

log = logging.getLogger(__name__)


def bt_objective(*, margin: float = 0.0, label_smoothing: float = 0.0):
    """``Objective`` for a ``RewardModel`` on pairs (chosen rows even, rejected rows odd)."""
    from upt_jax.models.reward import bradley_terry_loss
    from upt_jax.train.step import Objective

    def sums(model, batch):
        r = model(batch["tokens"], batch["attention_mask"])
        s, _, acc = bradley_terry_loss(r[0::2], r[1::2], margin=margin, label_smoothing=label_smoothing)
        return {"bt": s}, {"pair_accuracy": acc, "reward_margin": jnp.mean(r[0::2] - r[1::2])}

    return Objective(denominators=lambda b: {"bt": jnp.asarray(b["tokens"].shape[0] // 2, jnp.float32)}, sums=sums)


class RewardModelTrainer(Loop):
    """Trains a ``RewardModel``; ``run()`` to ``config.train.steps`` (`Loop.run`)."""

    def __init__(self, config):
        from upt_jax.data import load_tokenizer, make_dataset
        from upt_jax.models.partition import make_mesh
        from upt_jax.models.reward import reward_model_from
        from upt_jax.train.checks import validate
        from upt_jax.train.checkpoint import Checkpointer
        from upt_jax.train.metrics_log import MetricsWriter
        from upt_jax.train.state import create_train_state, make_optimizer
        from upt_jax.train.step import make_train_step
        from upt_jax.train.model_source import build_model
        from upt_jax.train.records import load_records

        validate(config)  # the policy's checks: config, paths and run directory, before anything is read
        self.config = config
        self.tok = load_tokenizer(config.tokenizer)
        self.records = load_records(config)
        validate(config, self.records, vocab_size=self.tok.vocab_size)  # records, tokenizer, free disk
        t = config.train
        m = config.mesh
        self.mesh = make_mesh(m.data, m.fsdp, m.tensor) if jax.device_count() > 1 else None
        special = dict(eos_token_id=self.tok.eos_id, bos_token_id=self.tok.bos_id, pad_token_id=self.tok.pad_id)
        policy = build_model(config.model, vocab_size=self.tok.vocab_size, special=special)
        model = reward_model_from(policy, seed=config.seed)
        tx = make_optimizer(
            t.learning_rate,
            schedule=t.schedule,
            warmup_steps=t.warmup_steps,
            total_steps=t.steps,
            weight_decay=t.weight_decay,
            max_grad_norm=t.max_grad_norm,
        )
        self.graphdef, self.state, self.shardings = create_train_state(model, tx, seed=config.seed, mesh=self.mesh)
        rm = config.reward_model
        self.process = config.mode == "prm"  # a process reward model (per-step labels)
        if self.process:
            from upt_jax.train.prm import prm_objective

            objective, group = prm_objective(), 1
        else:
            objective, group = bt_objective(margin=rm.margin, label_smoothing=rm.label_smoothing), 2
        self.step_fn = make_train_step(
            self.graphdef,
            tx,
            objective,
            num_microbatches=t.microbatches,
            group_size=group,
            mesh=self.mesh,
            shardings=self.shardings,
        )
        self.score_fn = jax.jit(lambda p, tokens, attn: nnx.merge(self.graphdef, p)(tokens, attn))
        self.token_score_fn = jax.jit(lambda p, tokens, attn: nnx.merge(self.graphdef, p).token_scores(tokens, attn))
        self.dataset = make_dataset(
            self.records, seed=config.seed, num_epochs=None, batch_size=t.questions_per_step, drop_remainder=True
        )
        self.data_iter = iter(self.dataset)
        self.heldout = self._heldout_records(rm.eval_pairs)
        self.ckpt = Checkpointer(
            os.path.join(config.run_dir, "checkpoints"),
            keep=config.checkpoint.keep,
            save_every=config.checkpoint.every,
            async_save=config.checkpoint.async_save,
        )
        self.metrics_log = MetricsWriter(config.run_dir, tensorboard=config.log.tensorboard)
        self.nonfinite_in_a_row = 0
        self.resume()
        self.write_config()

    def _heldout_records(self, n):
        from upt_jax.data import tasks

        c = self.config.data
        if c.source == "synthetic":  # a different seed: questions the model does not train on
            src = tasks.TierSource(tuple(c.tiers), max(1, -(-n // len(c.tiers))), seed=self.config.seed + 7919)
            return [src[i] for i in range(min(n, len(src)))]
        return list(self.records[-n:])  # files: the last rows (exclude them from training data yourself)

    def step_number(self) -> int:
        return int(self.state.step)  # one update per step (train.update_epochs is the policy's)

    def resume(self):
        """Restore the newest checkpoint (the state and the data iterator), if any, and cut the
        metrics log back to it."""
        from upt_jax.train.checkpoint import abstract_with_shardings

        if self.ckpt.latest_step() is None:
            if jax.process_index() == 0:
                self.metrics_log.reset()
            return
        self.state, extra = self.ckpt.restore(abstract_with_shardings(self.state, self.shardings))
        self.data_iter = iter(self.dataset)
        self.data_iter.set_state(extra["data_iterator"])
        if jax.process_index() == 0:
            self.metrics_log.truncate_after(extra["step"])

    def save(self, force=False):
        """Save the step just trained, when due or ``force``."""
        step = self.step_number()
        extra = dict(
            data_iterator=self.data_iter.get_state(), step=step, config=json.loads(self.config.to_json_best_effort())
        )
        return self.ckpt.save(step, self.state, extra, force=force)

    def _rows(self, records, seed: int):
        """Pairs (outcome RM) or step-labelled demonstrations (PRM) for ``records``."""
        return self._steps(records, seed) if self.process else self.pairs(records)

    def _steps(self, records, seed: int):
        """Each demonstration, corrupted at a random step with probability ½, with step labels
        (`upt_jax.train.prm.step_label_rows`)."""
        from upt_jax.train.prm import step_label_rows

        rows = step_label_rows(self.tok, records, [self._prompt(r) for r in records], seed)
        return {k: jnp.asarray(v) for k, v in rows.items()}

    def _prompt(self, record) -> list[int]:
        from upt_jax.data.templates import prompt_ids

        c = self.config.data
        return prompt_ids(self.tok, record["question"], c.template, system_prompt=c.system_prompt)

    def pairs(self, records):
        from upt_jax.train.batching import pack_rows
        from upt_jax.train.records import preference_pair

        prompts, responses = [], []
        for r in records:
            p = self._prompt(r)
            for text in preference_pair(r):
                prompts.append(p)
                responses.append(self.tok.encode(text) + [self.tok.eos_id])
        rows = pack_rows(prompts, responses, pad_id=self.tok.pad_id)
        rows.pop("truncated")
        return {k: jnp.asarray(v) for k, v in rows.items()}

    def _place(self, batch):
        from upt_jax.train.step import place_batch

        return place_batch(batch, self.mesh)

    def heldout_accuracy(self, params=None) -> float:
        """Held-out pairs whose chosen response scores higher (outcome RM), or held-out steps
        classified correctly (PRM)."""
        params = self.state.params if params is None else params
        if self.process:
            from upt_jax.train.prm import prm_loss

            b = self._steps(self.heldout, seed=self.config.seed + 104729)
            logits = self.token_score_fn(params, b["tokens"], b["attention_mask"])
            return float(prm_loss(logits, b["step_targets"], b["step_weights"])[2])
        b = self.pairs(self.heldout)
        r = np.asarray(self.score_fn(params, b["tokens"], b["attention_mask"]))
        return float(np.mean(r[0::2] > r[1::2]))

    def train_step(self) -> dict:
        """One update on the next ``questions_per_step`` pairs (PRM: demonstrations); the metrics,
        with the held-out accuracy every ``reward_model.eval_every`` steps and at the last."""
        t0 = time.perf_counter()
        seed = self.config.seed * 1000003 + self.step_number()
        batch = self._place(self._rows(next(self.data_iter), seed=seed))
        self.state, m = self.step_fn(self.state, batch)
        metrics = {k: float(v) for k, v in jax.device_get(m).items()}
        step = self.step_number()
        metrics["step"] = step
        if step % max(1, self.config.reward_model.eval_every) == 0 or step == self.config.train.steps:
            metrics["heldout/step_accuracy" if self.process else "heldout/pair_accuracy"] = self.heldout_accuracy()
        metrics["time/step_s"] = time.perf_counter() - t0
        self.count_divergence(metrics)
        return metrics

    def close(self):
        self.metrics_log.close()
        self.ckpt.close()


def train_reward_model(config) -> list[dict]:
    """Run (or resume) reward-model training; returns this call's metrics. A SIGTERM/SIGINT while
    the trainer is being built stops the loop before its first step, as for the policy."""
    from upt_jax.train.loop import run_trainer

    return run_trainer(RewardModelTrainer, config)
