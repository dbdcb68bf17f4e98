"""The frozen models' inputs to a step (no gradient flows into them): the reference's log-probs
(``ref_logp``), KTO's reference point, the distillation teacher's logits or log-probs (`Teacher`)
and PPO's critic values and GAE returns (`Critic`, trained beside the policy by its own step).
`frozen_inputs` is the stage between the assembled rows and the update; it gives a `Batch`."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from upt_jax.models.logprobs import jitted_logprobs
from upt_jax.train.kto import with_reference_point

log = logging.getLogger(__name__)

__all__ = ["Batch", "Teacher", "load_teacher", "Critic", "load_critic", "frozen_inputs"]


@dataclasses.dataclass(eq=False)
class Batch:
    """The update's inputs, on the device(s): ``policy`` (the jitted policy step's batch: the rows'
    columns ``[B, L]``/``[B]`` and the frozen models' inputs), ``critic`` (PPO's critic's update
    batch: ``tokens``, ``attention_mask``, ``mask``, ``values``, ``returns`` ``[B, L]``; None
    without a critic) and ``info`` (host metrics of the stage, e.g. ``kto/z0``)."""

    policy: dict
    critic: dict | None = None
    info: dict = dataclasses.field(default_factory=dict)


class Teacher:
    """A distillation recipe's frozen teacher (``config.teacher``), loaded once: any shape (a run
    directory's is the one it recorded), the student's tokenizer (checked) and a vocabulary of the
    student's size up to padding. `inputs` gives a step's ``teacher_logits`` (and ``teacher_ids``
    under the recipe's ``top_k``) and/or ``teacher_logp``."""

    def __init__(self, model, needs, *, vocab_size: int, chunk_size: int):
        from upt_jax.models.vocab_logprobs import teacher_logits

        self.needs = needs
        graphdef, self.params = nnx.split(model)
        top_k = needs.top_k
        self._logits_fn = jax.jit(
            lambda params, tokens, attn: teacher_logits(
                nnx.merge(graphdef, params), tokens, attn, vocab_size=vocab_size, top_k=top_k, chunk_size=chunk_size
            )
        )
        self._logp_fn = jitted_logprobs(graphdef, chunk_size=chunk_size)

    def inputs(self, batch) -> dict:
        """The teacher's inputs for this step's rows: ``teacher_logits [B, L, V]`` (or ``[B, L, k]``
        with ``teacher_ids [B, L, k]`` under ``top_k``), and/or ``teacher_logp [B, L]`` (the
        teacher's log-prob of each token, 0 off ``mask``)."""
        out, tokens, attn = {}, batch["tokens"], batch["attention_mask"]
        if self.needs.logits:
            z = self._logits_fn(self.params, tokens, attn)
            if self.needs.top_k:
                out["teacher_logits"], out["teacher_ids"] = z
            else:
                out["teacher_logits"] = z
        if self.needs.logp:
            out["teacher_logp"] = self._logp_fn(self.params, tokens, attn, batch.get("logit_columns")) * batch["mask"]
        return out


def load_teacher(config, recipe, tok, *, vocab_size: int, special: dict, mesh=None) -> Teacher | None:
    """The `Teacher` of ``recipe`` (None when it uses none; a configured teacher is then ignored,
    with a warning). ``vocab_size``: the student model's; ``tok``: the student's tokenizer."""
    from upt_jax.train.model_source import teacher_model
    from upt_jax.train.distill import teacher_inputs

    needs = teacher_inputs(recipe)
    tc = config.get("teacher")
    if not needs.any:
        if tc is not None and (tc.run_dir or tc.hf_dir):
            log.warning("config.teacher is set but recipe %s uses no teacher: not loaded", recipe.name)
        return None
    check_teacher_tokenizer(tc, tok, config.tokenizer)
    teacher = teacher_model(tc, mesh=mesh, vocab_size=tok.vocab_size, special=special)
    v_t, n = teacher.cfg.vocab_size, tok.vocab_size
    key = "config.teacher." + ("hf_dir" if tc.hf_dir else "run_dir")
    if v_t != vocab_size and min(v_t, vocab_size) < n:
        raise ValueError(
            f"{key}={tc.hf_dir or tc.run_dir!r}: the teacher's vocabulary has {v_t} entries, the "
            f"student's {vocab_size} (tokenizer {config.tokenizer!r}: {n} tokens); distillation "
            "needs one vocabulary (sizes may differ only in padding beyond the tokenizer's tokens)"
        )
    log.info(
        "teacher from %s: %d parameters, vocabulary %d (student %d)",
        tc.hf_dir or tc.run_dir,
        teacher.cfg.num_params(),
        v_t,
        vocab_size,
    )
    return Teacher(teacher, needs, vocab_size=vocab_size, chunk_size=config.train.logprob_chunk)


def check_teacher_tokenizer(tc, tok, student_spec) -> None:
    """The teacher's tokenizer (the one a run recorded, or a HF directory's own files) is the
    student's ``tok``: same size and the same ids for a probe text. Not checked when it cannot be
    read."""
    from upt_jax.data import load_tokenizer
    from upt_jax.train.run_model import recorded_tokenizer
    from upt_jax.train.run_spec import is_remote

    spec = None
    if tc.hf_dir:
        spec = tc.hf_dir if os.path.isfile(os.path.join(tc.hf_dir, "tokenizer_config.json")) else None
    elif not is_remote(tc.run_dir):
        spec = (recorded_tokenizer(tc.run_dir) or {}).get("tokenizer")
    if spec is None or (spec not in ("char", "builtin:char") and not os.path.isdir(spec)):
        log.warning(
            "teacher %s: its tokenizer %r cannot be read; only the vocabulary size is checked",
            tc.hf_dir or tc.run_dir,
            spec,
        )
        return
    theirs, probe = load_tokenizer(spec), "Question: 12 + 7 * 3 = ?\nAnswer: \\boxed{33}"
    if theirs.vocab_size != tok.vocab_size or theirs.encode(probe) != tok.encode(probe):
        raise ValueError(
            f"config.teacher.{'hf_dir' if tc.hf_dir else 'run_dir'}={tc.hf_dir or tc.run_dir!r} uses "
            f"tokenizer {spec!r} ({theirs.vocab_size} tokens), the student config.tokenizer="
            f"{student_spec!r} ({tok.vocab_size} tokens); distillation needs one vocabulary"
        )


class Critic:
    """PPO's value model: a copy of the policy ``model`` with a value head, its optimiser state,
    update step and checkpoints (``<run_dir>/checkpoints_critic``). ``spec``: ``(gamma, lam, kl)``
    of the recipe's GAE part (`run_spec.critic_spec`)."""

    def __init__(self, config, model, spec, *, group_size: int, mesh=None):
        from upt_jax.models.value import explained_variance, value_loss, value_model_from
        from upt_jax.train.checkpoint import Checkpointer
        from upt_jax.train.state import create_train_state, make_optimizer
        from upt_jax.train.step import Objective, make_train_step

        self.spec = spec
        t, cc = config.train, config.critic
        critic = value_model_from(model, seed=config.seed)
        self.tx = make_optimizer(cc.learning_rate, max_grad_norm=t.max_grad_norm)
        self.graphdef, self.state, self.shardings = create_train_state(critic, self.tx, seed=config.seed, mesh=mesh)

        def sums(m, batch):
            v = m(batch["tokens"], batch["attention_mask"])
            s, _ = value_loss(v, batch["values"], batch["returns"], batch["mask"], clip=cc.clip)
            # of the values the policy's GAE used (before this update): logged as critic/explained_variance
            return {"value": s}, {
                "explained_variance": explained_variance(batch["values"], batch["returns"], batch["mask"])
            }

        objective = Objective(denominators=lambda b: {"value": jnp.sum(b["mask"])}, sums=sums)
        self.step_fn = make_train_step(
            self.graphdef,
            self.tx,
            objective,
            num_microbatches=t.microbatches,
            group_size=group_size,
            skip_update_ratio=t.get("skip_update_ratio", 1.0),
            mesh=mesh,
            shardings=self.shardings,
        )
        self.ckpt = Checkpointer(
            os.path.join(config.run_dir, "checkpoints_critic"),
            keep=config.checkpoint.keep,
            save_every=config.checkpoint.every,
            async_save=config.checkpoint.async_save,
        )
        graphdef = self.graphdef
        self._values_fn = jax.jit(lambda params, tokens, attn: nnx.merge(graphdef, params)(tokens, attn))

    def inputs(self, batch):
        """``(values, returns)`` ``[B, L]``: the critic's old values and the GAE returns it is
        trained towards (the same rewards the policy's GAE sees)."""
        from upt_jax import upge

        gamma, lam, kl = self.spec
        values = self._values_fn(self.state.params, batch["tokens"], batch["attention_mask"])
        values = values * batch["mask"]
        if kl is not None:
            tok_rewards = upge.kl_penalised_rewards(
                batch["rewards"], batch["old_logp"], batch["ref_logp"], batch["mask"], kl.coef, kl.kind
            )
        else:
            tok_rewards = upge.last_token_rewards(batch["rewards"], batch["mask"])
        _, returns = upge.gae_advantages(tok_rewards, values, batch["mask"], gamma, lam)
        return values, returns

    def update(self, batch) -> dict:
        """One critic update on ``batch`` (placed, with ``values`` and ``returns``); its metrics."""
        self.state, m = self.step_fn(self.state, batch)
        return m


def load_critic(run_dir: str, *, step: int | None = None):
    """``(graphdef, params, step)``: the critic a PPO run trained beside its policy (its
    ``checkpoints_critic``), rebuilt on the run's policy architecture: ``nnx.merge(graphdef,
    params)(tokens, attention_mask)`` gives the values ``[B, L]``. ``step``: that checkpoint
    (default: the newest usable one). Raises ``FileNotFoundError`` for a run without a critic."""
    from upt_jax.models.value import value_model_from
    from upt_jax.train.checkpoint import abstract_with_shardings, restore_params
    from upt_jax.train.run_model import load_run_model

    directory = os.path.join(run_dir, "checkpoints_critic")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{run_dir} has no checkpoints_critic (not a PPO run with a critic?)")
    policy, _, cfg, _ = load_run_model(run_dir)
    graphdef, state = nnx.split(value_model_from(policy, seed=int(cfg.get("seed", 0))))
    params, restored = restore_params(directory, abstract_with_shardings(state), step, return_step=True)
    return graphdef, params, restored


def frozen_inputs(
    batch: dict,
    *,
    params,
    key: jax.Array,
    logp_fn: Callable,
    ref_params=None,
    ref_off_fn: Callable | None = None,
    uniforms: bool = False,
    teacher: Teacher | None = None,
    critic: Critic | None = None,
    mesh=None,
    behaviour_fn: Callable | None = None,
) -> Batch:
    """The step's batch (on the device(s)) with the frozen models' inputs added, before the update:

    * ``ref_logp [B, L]``: the reference's log-probs (``logp_fn`` on ``ref_params``, or with LoRA
      ``ref_off_fn`` on the policy's ``params`` with the adapters off), 0 off ``mask``;
    * ``clip_cov_uniforms [B, L]`` (``uniforms``: Clip-Cov's draw, from the step's ``key``);
    * KTO's ``kto_z0`` from its mismatched pairs (when the batch has ``kl_tokens``);
    * the `Teacher`'s inputs; the `Critic`'s ``values``;
    * ``behaviour_fn`` (the ablation ``rollout.train_temperature``, `run_spec.behaviour_recomputed`):
      the rollouts' ``old_logp`` recomputed with it on ``params`` (the demonstrations' kept).

    Returns a `Batch`, placed on ``mesh`` (`upt_jax.train.step.place_batch`): its ``critic`` is the
    critic's update batch (with GAE ``returns``), its ``info`` host metrics (``kto/z0``)."""
    from upt_jax.train.step import place_batch

    info = {}
    cols = batch.get("logit_columns")  # the rows' response columns: the only ones ``mask`` keeps
    if ref_params is not None:
        batch["ref_logp"] = logp_fn(ref_params, batch["tokens"], batch["attention_mask"], cols) * batch["mask"]
    elif ref_off_fn is not None:
        batch["ref_logp"] = ref_off_fn(params, batch["tokens"], batch["attention_mask"], cols) * batch["mask"]
    if behaviour_fn is not None:
        new = behaviour_fn(params, batch["tokens"], batch["attention_mask"], cols) * batch["mask"]
        demo = batch.get("is_demo")
        batch["old_logp"] = new if demo is None else jnp.where(demo[:, None] > 0, batch["old_logp"], new)
    if uniforms:  # Clip-Cov's draw: the step's key
        batch["clip_cov_uniforms"] = jax.random.uniform(jax.random.fold_in(key, 0xC1C0), batch["mask"].shape)
    if "kl_tokens" in batch:  # KTO: the reference point z0 from mismatched pairs, no gradient
        off = (
            None
            if ref_params is not None or ref_off_fn is None
            # LoRA: the base, adapters off
            else (lambda tokens, attn: ref_off_fn(params, tokens, attn))
        )
        batch, z0 = with_reference_point(batch, logp_fn, params, ref_params, ref_logp_fn=off)
        info["kto/z0"] = float(z0)
    if teacher is not None:
        batch.update(teacher.inputs(batch))
    critic_batch = None
    if critic is not None:
        batch["values"], returns = critic.inputs(batch)
        critic_batch = place_batch(
            dict(
                tokens=batch["tokens"],
                attention_mask=batch["attention_mask"],
                mask=batch["mask"],
                values=batch["values"],
                returns=returns,
            ),
            mesh,
        )
    return Batch(policy=place_batch(batch, mesh), critic=critic_batch, info=info)
