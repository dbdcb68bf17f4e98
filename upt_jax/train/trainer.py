"""The training loop's façade: `Trainer` wires one run's stages together and `train` runs (or
resumes) one training run: a policy or a reward model.

    from upt_jax.train.trainer import train
    train(config)       # config: upt_jax.train.config.base_config() or an experiments/ module

The modes that launch several runs (STaR, the comparison) are above this module: run them, or any
mode, with `upt_jax.dispatch.train` (``upt train``).

One step (online): take ``Q`` questions; roll out ``n`` responses each with the current parameters
and score them (`rollouts`); assemble the rows, with each question's demonstration last in its
group when the recipe trains on one (`rows.group_rows`); add the frozen models' inputs (reference,
teacher, critic: `frozen.frozen_inputs`); then ``update_epochs`` updates of the jitted step
(``prepare``: advantages and gates, inside it). Offline: ``Q`` demonstrations per step. The loop
(resume, step, log, save, non-finite guard) is `loop.Loop`; config checks are `checks`; models
come from `model_source`; records from `records`.

Reproducibility: the sampling key of step ``s`` is ``fold_in(state.rng, s)`` and the data
iterator state is checkpointed, so a resumed run continues bitwise as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from upt_jax import upge
from upt_jax.models.partition import batch_shards
from upt_jax.train import compile_cache, lora_state, run_spec, shapes
from upt_jax.train import rows as rows_lib
from upt_jax.train.checks import checkpoint_bytes_estimate, validate
from upt_jax.train import stages
from upt_jax.train.frozen import Critic, load_teacher
from upt_jax.train.kto import uses_kto
from upt_jax.train.loop import Loop, NonFiniteError, progress_postfix, run_trainer
from upt_jax.train.model_source import build_model
from upt_jax.train.records import corpus_records, load_records, preference_pair
from upt_jax.train.overlap import overlap_settings
from upt_jax.train.rollouts import new_timing, sampling_params
from upt_jax.train.rows import kept_set_rows
from upt_jax.train.run_spec import critic_spec, get_recipe, group_size, kept_set_replay, rollout_temperature

log = logging.getLogger(__name__)

# the public names of the modules the trainer was split into, importable from here as before
__all__ = [
    "Trainer",
    "train",
    "NonFiniteError",
    "progress_postfix",
    "build_model",
    "load_records",
    "corpus_records",
    "preference_pair",
    "get_recipe",
    "critic_spec",
    "rollout_temperature",
    "kept_set_replay",
    "kept_set_rows",
    "checkpoint_bytes_estimate",
    "validate",
]


class Trainer(Loop):
    """Holds everything one run needs; ``run()`` trains to ``config.train.steps``.

    ``recipe``: an ``upt_jax.upge.Recipe`` value to train instead of ``config.recipe`` (e.g. one
    composed in a notebook); the run's config then names it, and ``<run_dir>/recipe.json`` records
    it so that ``upt train --config ... --config.recipe.name=NAME`` resumes it in a new process
    (`upt_jax.train.recipe_io`). A run resumed from a checkpoint must train the recipe it recorded.
    """

    def __init__(self, config, recipe=None):
        from upt_jax.data import load_tokenizer, make_dataset
        from upt_jax.models.partition import make_mesh
        from upt_jax.rewards import Verifier
        from upt_jax.sampling import Sampler
        from upt_jax.train import recipe_io
        from upt_jax.train.checkpoint import Checkpointer
        from upt_jax.train.run_model import carry_tokenizer, record_for, write_record
        from upt_jax.train.state import create_train_state
        from upt_jax.train.in_training import StepHooks
        from upt_jax.train.metrics_log import MetricsWriter

        from upt_jax.train.compile_stats import CompileWatch

        self._compiles = CompileWatch()  # time/first_step_s, compile/* (counted from here)
        if recipe is not None:
            config = recipe_io.config_for(config, recipe)
        self.config = config
        compile_cache.enable(config)  # XLA's persistent cache (before anything compiles)
        recipe = recipe_io.given_or_recorded(config, recipe)
        validate(config, recipe=recipe)  # config, paths and run directory: before anything is read or built
        self.recipe = get_recipe(config, recipe)
        recipe_io.check_resumed(config.run_dir, self.recipe)  # a resumed run trains the recipe it recorded
        carry_tokenizer(config)  # init=checkpoint: the parent run's tokenizer and template
        self.tok = load_tokenizer(config.tokenizer)
        self.records = load_records(config, self.recipe)
        validate(config, self.records, vocab_size=self.tok.vocab_size, recipe=self.recipe)
        self.requirements = upge.requirements(self.recipe)
        self.with_demos = self.requirements.demos
        self.online = config.mode == "online"
        if config.mode not in ("online", "offline", "preference"):
            raise ValueError(f"config.mode must be online, offline or preference, not {config.mode!r}")
        self.preference = config.mode == "preference"
        m = config.mesh
        self.mesh = make_mesh(m.data, m.fsdp, m.tensor) if jax.device_count() > 1 else None
        special = dict(eos_token_id=self.tok.eos_id, bos_token_id=self.tok.bos_id, pad_token_id=self.tok.pad_id)
        model = build_model(config.model, vocab_size=self.tok.vocab_size, special=special, mesh=self.mesh)
        model, self.lora = lora_state.adapt(model, config)  # model.lora: adapters (None: full fine-tuning)
        t = config.train
        self.tx = stages.optimizer(config)
        self.graphdef, self.state, self.shardings = create_train_state(
            model, self.tx, seed=config.seed, mesh=self.mesh, trainable=lora_state.trainable(self.lora)
        )
        self.group_size = group_size(config, self.with_demos)  # rows vs mesh checked in validate
        # online: the policy trained is the one the rollouts come from, π_θ at the rollout
        # temperature τ (log-probs, ratios, entropies, the reference's log-probs all at τ)
        self.temperature, self.recompute_behaviour = rollout_temperature(config), run_spec.behaviour_recomputed(config)
        self.step_fn = stages.policy_step(
            config,
            self.recipe,
            self.graphdef,
            self.tx,
            group_size=self.group_size,
            temperature=self.temperature,
            mesh=self.mesh,
            shardings=self.shardings,
            lora=self.lora,
        )
        # rollout.overlap_chunks: scoring overlapped with generation (upt_jax.train.overlap)
        self.overlap_chunks, self.score_executor, sampler_kw = overlap_settings(config, self.mesh, self.online)
        self.sampler = Sampler(model, pad_id=self.tok.pad_id, mesh=self.mesh, **sampler_kw) if self.online else None
        self.logp_fn = stages.policy_logp_fn(self.graphdef, chunk_size=t.logprob_chunk, temperature=self.temperature)
        # the frozen reference: the initial parameters (a copy: the train state's are donated); with
        # adapters, the train state's own params with the adapters switched off (no copy)
        ref = self.requirements.reference
        self.ref_params = jax.tree.map(jnp.copy, self.state.params) if ref and self.lora is None else None
        self.ref_off_fn = (
            None
            if not ref or self.lora is None
            else lora_state.reference_logp_fn(model, chunk_size=t.logprob_chunk, temperature=self.temperature)
        )
        self.teacher = load_teacher(
            config, self.recipe, self.tok, vocab_size=model.cfg.vocab_size, special=special, mesh=self.mesh
        )
        spec = critic_spec(self.recipe)  # PPO: with adapters, a fully trained critic from the base weights
        self.critic = (
            None
            if spec is None
            else Critic(
                config,
                model if self.lora is None else lora_state.merge_lora(model),
                spec,
                group_size=self.group_size,
                mesh=self.mesh,
            )
        )
        self.reward_fns = None  # reward.functions: the user's reward functions (upt_jax.rewards.functions)
        if self.online and config.reward.source == "verifier" and config.reward.get("functions"):
            from upt_jax.rewards.functions import RewardFunctions

            rc = config.reward
            self.reward_fns = RewardFunctions(
                list(rc.functions), list(rc.weights), timeout_s=rc.timeout_s, where="config.reward.functions"
            )
        self.verifier = Verifier(config.data.verifier) if self.online and self.reward_fns is None else None
        self.learned_reward = None
        if self.online and config.reward.source == "model":
            from upt_jax.train.reward_scorers import LearnedReward

            self.learned_reward = LearnedReward(
                config.reward.model_run_dir, pad_id=self.tok.pad_id, normalize=config.reward.normalize
            )
        self.process_reward = None
        if self.online and config.reward.prm_run_dir:
            from upt_jax.train.reward_scorers import ProcessReward

            newline = self.tok.encode("\n")
            if len(newline) != 1:
                raise ValueError("config.reward.prm_run_dir needs a tokenizer with a single newline token")
            self.process_reward = ProcessReward(config.reward.prm_run_dir, newline_id=newline[0])
        if config.reward.source not in ("verifier", "model"):
            raise ValueError(f"config.reward.source must be verifier or model, not {config.reward.source!r}")
        # online: one prompt bucket for the whole run (upt_jax.train.shapes): no recompile for a new one
        self.prompt_floor = shapes.prompt_floor(self.records, self.prompt_ids) if self.online else 0
        self.dataset = make_dataset(
            self.records, seed=config.seed, num_epochs=None, batch_size=t.questions_per_step, drop_remainder=True
        )
        self.data_iter = iter(self.dataset)
        self.ckpt = Checkpointer(
            os.path.join(config.run_dir, "checkpoints"),
            keep=config.checkpoint.keep,
            save_every=config.checkpoint.every,
            async_save=config.checkpoint.async_save,
        )
        self.metrics_log = MetricsWriter(config.run_dir, tensorboard=config.log.tensorboard)
        self.nonfinite_in_a_row = 0
        self.hooks = StepHooks(self)  # completions.jsonl, in-training evaluation (train.eval_every)
        self.resume()
        self.write_config()  # config.json (process 0)
        recipe_io.write_recorded(config.run_dir, self.recipe)  # recipe.json (process 0)
        write_record(config.run_dir, record_for(config, model, self.tok))  # model.json (process 0)

    # ------------------------------------------------------------------ checkpoints
    @property
    def critic_state(self):
        """PPO's critic's train state (None without a critic)."""
        return None if self.critic is None else self.critic.state

    def checkpointers(self) -> list:
        return [self.ckpt] + ([] if self.critic is None else [self.critic.ckpt])

    def save(self, force=False):
        """Save the step just trained (the critic's too), when due or ``force``."""
        step = self.step_number()
        extra = dict(
            data_iterator=self.data_iter.get_state(), config=json.loads(self.config.to_json_best_effort()), step=step
        )
        if self.critic is not None:
            self.critic.ckpt.save(step, self.critic.state, dict(step=step), force=force)
        return self.ckpt.save(step, lora_state.saved_state(self.state, self.lora), extra, force=force)

    def resume(self):
        """Restore the newest checkpoint of the run directory, if any (the train state, the critic's,
        the data iterator), and cut the metrics and completions logs back to it."""
        from upt_jax.train.checkpoint import abstract_with_shardings

        if self.ckpt.latest_step() is None:
            if jax.process_index() == 0:
                self.metrics_log.reset()  # a fresh run: stale metrics from a run that saved nothing
                self.hooks.truncate_after(None)
            return
        abstract = abstract_with_shardings(
            lora_state.saved_state(self.state, self.lora), lora_state.saved_state(self.shardings, self.lora)
        )
        restored, extra = self.ckpt.restore(abstract)
        self.state = lora_state.with_base(restored, self.state, self.lora)  # adapters: base not saved
        if self.critic is not None:
            self.critic.state, _ = self.critic.ckpt.restore(
                abstract_with_shardings(self.critic.state, self.critic.shardings), step=extra["step"]
            )
        self.data_iter = iter(self.dataset)
        self.data_iter.set_state(extra["data_iterator"])
        step = int(self.state.step)
        log.info("resumed %s at step %d", self.config.run_dir, step)
        if jax.process_index() == 0:
            self.metrics_log.truncate_after(extra.get("step", step))
            self.hooks.truncate_after(extra.get("step", step))

    # ------------------------------------------------------------------ the stages of one step
    def prompt_ids(self, question) -> list[int]:
        """``question``: a record (its chat prompt when it has one) or a question's text."""
        from upt_jax.data.templates import prompt_ids

        c = self.config.data
        return prompt_ids(self.tok, question, c.template, system_prompt=c.system_prompt)

    def rollouts(self, records, prompts, key, timing) -> stages.ScoredRollouts:
        """Rollout and score (`upt_jax.train.rollouts.rollouts`) with the current parameters; the
        groups are kept as ``last_groups``."""
        scorer = stages.Scorer(
            self.tok, verifier=self.verifier, reward_fns=self.reward_fns, learned_reward=self.learned_reward
        )
        self.last_groups = stages.rollouts(
            self.sampler,
            self.state.params,
            scorer,
            records,
            prompts,
            key,
            sampling_params(self.config, self.tok),
            chunks=self.overlap_chunks,
            executor=self.score_executor,
            timing=timing,
            min_prompt_len=self.prompt_floor,
        )
        return self.last_groups

    def batch(self, records, key):
        """``(rows, info, timing)``: one step's rows (numpy, `upt_jax.train.rows`), host-side metrics
        and timings. Online: rollouts scored and grouped (DAPO's dynamic sampling draws again from
        the data iterator), kept as ``step_groups``, assembled into rows."""
        timing, info = {}, {}
        c = self.config.data
        if not self.online and all("text" in r for r in records):
            return rows_lib.text_rows(self.tok, records) + (timing,)
        prompts = [self.prompt_ids(r) for r in records]
        if self.preference and uses_kto(self.recipe):
            return rows_lib.kto_preference_rows(self.tok, records, prompts) + (timing,)
        if self.preference:
            return rows_lib.preference_rows(self.tok, records, prompts) + (timing,)
        if not self.online:
            return rows_lib.sft_rows(self.tok, records, template=c.template, system_prompt=c.system_prompt) + (timing,)
        timing.update(new_timing())

        def more():
            nxt = next(self.data_iter)
            return nxt, [self.prompt_ids(r) for r in nxt]

        t = self.config.train
        groups = stages.draw_groups(
            lambda r, p, k: self.rollouts(r, p, k, timing),
            records,
            prompts,
            key,
            q=len(records),
            dynamic=t.dynamic_sampling,
            max_draws=t.dynamic_sampling_max_draws,
            more=more,
        )
        self.step_groups = groups  # the step's rollouts (completions.jsonl)
        rows, info = stages.assemble_rows(
            groups,
            self.tok,
            demos=self.with_demos,
            recipe_name=self.recipe.name,
            replay=kept_set_replay(self.config),
            process_reward=self.process_reward,
            min_prompt_len=self.prompt_floor,
        )
        return rows, info, timing

    def place(self, rows) -> dict:
        """Rows as device arrays, over the mesh's ``('data', 'fsdp')`` (`stages.to_device`)."""
        return stages.to_device(rows, self.mesh)

    def pack(self, rows) -> tuple[dict, dict]:
        """``rows`` packed for the update step (`rows.pack_for_update`) and ``pack/*`` metrics."""
        return rows_lib.pack_for_update(
            rows,
            row_multiple=batch_shards(self.mesh),
            num_microbatches=self.config.train.microbatches,
            group_size=self.group_size,
        )

    def frozen_inputs(self, batch, key) -> stages.Batch:
        """The frozen models' inputs added to a placed batch, placed (`frozen.frozen_inputs`)."""
        return stages.frozen_inputs(
            batch,
            params=self.state.params,
            key=key,
            logp_fn=self.logp_fn,
            ref_params=self.ref_params,
            ref_off_fn=self.ref_off_fn,
            uniforms="clip_cov_uniforms" in self.requirements.batch,
            teacher=self.teacher,
            critic=self.critic,
            mesh=self.mesh,
            behaviour_fn=self.logp_fn if self.recompute_behaviour else None,  # the train_temperature ablation
        )

    def update(self, batch: stages.Batch) -> dict:
        """``update_epochs`` updates of the policy (and ``critic.update_epochs`` of the critic) on
        ``batch`` (`stages.update`)."""
        self.state, m = stages.update(
            self.step_fn,
            self.state,
            batch,
            epochs=self.config.train.update_epochs,
            critic=self.critic,
            critic_epochs=self.config.critic.get("update_epochs"),
        )
        return m

    def train_step(self):
        """One step: data → rows (rollouts, rewards) → frozen inputs → update(s). Returns the metrics."""
        t_start = time.perf_counter()
        step = self.step_number()
        records = next(self.data_iter)
        key = jax.random.fold_in(self.state.key, step)
        rows, info, timing = self.batch(records, key)
        rows.pop("truncated")
        if self.config.train.get("share_prompt", False):
            rows_lib.check_shared_prompts(rows, self.group_size)
        if self.config.train.get("pack_sequences", False):
            t0 = time.perf_counter()
            rows, pack_info = self.pack(rows)
            info.update(pack_info)
            timing["pack_s"] = time.perf_counter() - t0
        batch = self.place(rows)
        t0 = time.perf_counter()
        batch = self.frozen_inputs(batch, key)
        info.update(batch.info)
        m = self.update(batch)
        timing["update_s"] = time.perf_counter() - t0
        metrics = {k: float(v) for k, v in m.items()}
        metrics.update(info)
        metrics.update(getattr(self.records, "data_metrics", {}))  # rows read / skipped from files
        metrics.update({f"time/{k}": v for k, v in timing.items()})
        tokens = float(np.sum(rows["attention_mask"]))
        metrics["time/step_s"] = time.perf_counter() - t_start
        metrics["tokens_per_s"] = tokens / max(metrics["time/step_s"], 1e-9)
        metrics.update(self._compiles.step_metrics())
        if self.verifier is not None:
            metrics.update({k: float(v) for k, v in self.verifier.metrics().items()})
        if self.reward_fns is not None:
            metrics.update(self.reward_fns.metrics())  # reward/<name>, reward/<name>/timeout, ...
        if self.learned_reward is not None:
            metrics.update(self.learned_reward.metrics())  # the raw scores (the rewards may be whitened)
        self.count_divergence(metrics)  # a divergence counts towards the stop (Loop)
        metrics["step"] = self.step_number()
        return metrics

    def close(self):
        self._compiles.close()
        if self.score_executor is not None:
            self.score_executor.shutdown(wait=True, cancel_futures=True)
        self.metrics_log.close()
        for c in self.checkpointers():
            c.close()
        if self.verifier is not None:
            self.verifier.close()
        if getattr(self, "reward_fns", None) is not None:
            self.reward_fns.close()
        if getattr(self, "hooks", None) is not None:
            self.hooks.close()


# the modes that launch several runs, dispatched above the regimes they orchestrate
MULTI_RUN_MODES = ("star", "comparison")


def train(config) -> list[dict]:
    """Run (or resume) one training run ``config`` on the loop; returns the metrics of the steps run now.

    ``config.mode``: ``online``, ``offline`` or ``preference`` trains the policy (`Trainer`);
    ``reward_model`` a Bradley–Terry reward model and ``prm`` a process reward model
    (``upt_jax.train.reward_model``). The modes that launch several runs (``star``: STaR rounds,
    ``comparison``: arms × seeds) import this function for their runs, so they are run by
    `upt_jax.dispatch.train` (what ``upt train`` calls), which runs every mode."""
    if config.get("mode") in MULTI_RUN_MODES:
        raise ValueError(
            f"config.mode={config.mode!r} launches several runs: run it with "
            "upt_jax.dispatch.train(config) or `upt train`, not upt_jax.train.trainer.train"
        )
    if config.mode in ("reward_model", "prm"):
        from upt_jax.train.reward_model import train_reward_model

        return train_reward_model(config)
    return run_trainer(Trainer, config)
