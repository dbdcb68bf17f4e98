"""Pre-training a testbed's base model until it has learned its base tiers (a stopping criterion,
not a fixed step count on a decaying schedule).

The tiny base models of the synthetic task families learn their procedures abruptly: an audit
saw the held-out pass rate of a 3-digit tier at ≤ 7 % through step 580, 48 % at 600 and 87.5 % at
800, while a cosine schedule was already decaying, so the same config gave base models anywhere
from 35 % to 96 % on one tier. `pretrain_until` instead trains in two phases: (1) at a constant
learning rate (after warm-up), evaluating the base tiers greedily every ``eval_every`` steps, until
every tier has passed ``transition`` in ``patience`` evaluations in a row (or ``max_steps``);
(2) a linear cool-down to 0 (``schedule=wsd``) over ``cooldown_frac`` of phase 1's steps, which
consolidates what a constant rate keeps shaking (at 3e-3 the hinted family's 3-digit tier
oscillated between 28 % and 52 % for 1,000 steps). The base model is the end of phase 2;
``converged`` says whether every tier reached ``target`` there. Resuming is bitwise (the trainer's
checkpoints), so the phases change nothing about the steps that were run.

    from experiments import pretrain_hint
    from upt_jax.studies.base_model import StopCriterion, pretrain_until
    result = pretrain_until(pretrain_hint.get_config(), StopCriterion(tiers=("hadd_2", "hadd_3")))
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Sequence

from upt_jax.studies.base_record import (
    compare_to_record,
    record_rebuild,
    remeasure_record,
    reported_lines,
    seed_measurements,
    seed_range,
    spread_passes,
)

log = logging.getLogger(__name__)

__all__ = [
    "StopCriterion",
    "PretrainResult",
    "pretrain_until",
    "PROTOCOL",
    "measure_tiers",
    "ship_base",
    # the record's judgement and updates, from `upt_jax.studies.base_record`
    "compare_to_record",
    "spread_passes",
    "seed_measurements",
    "seed_range",
    "record_rebuild",
    "remeasure_record",
    "reported_lines",
]


@dataclasses.dataclass(frozen=True)
class StopCriterion:
    """When a base model has passed its transition, how long it cools down, and what it must reach.

    Attributes:
      tiers: the tiers it must solve (greedy accuracy on ``n_eval`` held-out questions each).
      transition: phase 1 (constant learning rate) ends once every tier's greedy accuracy is at
        least this in ``patience`` evaluations in a row: the abrupt transition has happened.
      target: ``converged`` means every tier reaches this at the end of the cool-down.
      cooldown_frac: phase 2 decays the learning rate linearly to 0 (``schedule=wsd``) over this
        fraction of the steps phase 1 took (rounded up to ``eval_every``): at a constant rate the
        learned tiers keep oscillating (an audit run of the hinted family: 3-digit tier between 28 %
        and 52 % over its last 1,000 of 3,000 constant-rate steps).
      min_cooldown: phase 2 lasts at least this many steps (a model whose transition came early
        still gets a full cool-down: seeds then agree on the tiers that are learned late).
      patience: evaluations in a row for ``transition``.
      eval_every: steps between evaluations.
      max_steps: phase 1 gives up here and cools down anyway (``converged`` then says the rest).
      n_eval: questions per tier (drawn with ``eval_seed``, apart from the training stream).
      eval_seed: the questions' seed.
      max_new_tokens: generation budget per question.
    """

    tiers: tuple[str, ...]
    transition: float = 0.3
    target: float = 0.85
    cooldown_frac: float = 0.5
    min_cooldown: int = 0
    patience: int = 2
    eval_every: int = 100
    max_steps: int = 3000
    n_eval: int = 64
    eval_seed: int = 4242
    max_new_tokens: int = 192

    def __post_init__(self):
        if not self.tiers:
            raise ValueError("StopCriterion.tiers is empty")
        if not (
            0 < self.transition <= 1
            and 0 < self.target <= 1
            and self.cooldown_frac > 0
            and self.patience >= 1
            and self.eval_every >= 1
            and self.max_steps >= 1
        ):
            raise ValueError(f"StopCriterion: thresholds in (0, 1], cooldown_frac > 0, counts ≥ 1 ({self})")

    def cooldown_steps(self, stable_steps: int) -> int:
        n = max(1, int(self.cooldown_frac * stable_steps), self.min_cooldown)
        return -(-n // self.eval_every) * self.eval_every


@dataclasses.dataclass
class PretrainResult:
    """``history``: one ``{"step", tier: greedy accuracy}`` per evaluation; ``cooldown_from``: the
    step phase 1 ended (None while it runs); ``step``: where training stopped; ``converged``: every
    tier reached ``target`` at the end of the cool-down."""

    run_dir: str
    step: int
    converged: bool
    history: list[dict]
    cooldown_from: int | None = None
    final_step: int | None = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _passed_transition(history: Sequence[dict], c: StopCriterion) -> bool:
    recent = history[-c.patience :]
    return len(recent) == c.patience and all(all(h[t] >= c.transition for t in c.tiers) for h in recent)


def pretrain_until(config, criterion: StopCriterion, *, progress: bool = False) -> PretrainResult:
    """Train ``config`` (offline language modelling, ``schedule`` constant) to ``criterion``: phase 1
    at a constant learning rate until the transition, phase 2 a linear cool-down (``wsd``).

    Writes ``<run_dir>/pretrain_history.json`` (the `PretrainResult`) after every evaluation; a
    rerun resumes from the run directory's checkpoint and history (bitwise, as any resume).
    """
    from upt_jax.data import tasks

    config = config.copy_and_resolve_references()  # the phases change schedule and steps: not the caller's
    if config.train.schedule != "constant":
        raise ValueError(
            f"config.train.schedule={config.train.schedule!r}: pretrain_until runs 'constant' "
            "(with warmup_steps), then cools down with 'wsd' itself"
        )
    suites = {t: tasks.generate(t, criterion.n_eval, seed=criterion.eval_seed) for t in criterion.tiers}
    path = os.path.join(config.run_dir, "pretrain_history.json")
    state = PretrainResult(str(config.run_dir), 0, False, [])
    if os.path.exists(path):
        with open(path) as f:
            state = PretrainResult(**json.load(f))

    def save():
        with open(path, "w") as f:
            json.dump(state.to_json(), f, indent=2)

    if state.cooldown_from is None:  # phase 1: constant learning rate until the transition
        state.step = _train_and_evaluate(
            config,
            criterion,
            suites,
            state,
            save,
            progress,
            until=lambda h, s: _passed_transition(h, criterion) or s >= criterion.max_steps,
        )
        state.cooldown_from = state.step
        save()
    final = state.cooldown_from + criterion.cooldown_steps(state.cooldown_from)
    config.train.schedule, config.train.decay_steps = "wsd", final - state.cooldown_from
    config.train.steps = final
    state.step = _train_and_evaluate(config, criterion, suites, state, save, progress, until=lambda h, s: s >= final)
    last = state.history[-1]
    state.final_step = state.step
    state.converged = all(last[t] >= criterion.target for t in criterion.tiers)
    save()
    return state


def _train_and_evaluate(config, criterion, suites, state, save, progress, until) -> int:
    """Train ``eval_every`` steps at a time and evaluate greedily until ``until(history, step)``;
    returns the step reached."""
    from flax import nnx

    from upt_jax.eval.evaluate import evaluate
    from upt_jax.sampling import Sampler
    from upt_jax.train.trainer import Trainer

    limit = int(config.train.steps)
    trainer = Trainer(config)
    try:
        sampler = Sampler(nnx.merge(trainer.graphdef, trainer.state.params), pad_id=trainer.tok.pad_id, streams=1)
        step = int(trainer.state.step)
        state.history = [h for h in state.history if h["step"] <= step]
        while not until(state.history, step) and step < max(limit, criterion.max_steps):
            trainer.config.train.steps = step + criterion.eval_every
            trainer.run()
            step = int(trainer.state.step)
            results = evaluate(
                None,
                trainer.tok,
                suites,
                k=1,
                temperature=0.0,
                max_new_tokens=criterion.max_new_tokens,
                template=config.data.template,
                params=trainer.state.params,
                sampler=sampler,
            )
            entry = {"step": step, **{t: float(r.avg_at_k) for t, r in results.items()}}
            state.history.append(entry)
            state.step = step
            line = ", ".join(f"{t} {entry[t]:.3f}" for t in criterion.tiers)
            log.info("pretrain %s step %d: %s", config.run_dir, step, line)
            if progress:
                print(f"step {step}{' (cool-down)' if state.cooldown_from is not None else ''}: {line}", flush=True)
            save()
    finally:
        trainer.close()
    return step


# ----------------------------------------------------------------------------- a shipped base model
# How a shipped base model's per-tier rates are measured (and re-measured by a rebuild): greedy
# accuracy, the sampled accuracy at the rollout temperature (what RL sharpens), and pass@64 (whether
# a tier is within the model's reach at all). pass@64 is on 128 questions: on 32, a tier near 50 %
# carries a binomial SE of about 9 points, and two measurements of one model family could not be
# told within 5 (docs/testbed.md, session 16).
PROTOCOL = dict(
    n_greedy=256, n_sampled=128, sampled_k=8, n_pass=128, pass_k=64, temperature=1.0, eval_seed=4242, max_new_tokens=192
)


def measure_tiers(
    model,
    tok,
    tiers: Sequence[str],
    *,
    pass_tiers: Sequence[str] = (),
    template: str = "zero",
    protocol: dict | None = None,
    key=None,
) -> dict[str, dict]:
    """Per-tier rates of ``model`` under ``protocol`` (default `PROTOCOL`), on held-out questions
    (``eval_seed``): ``greedy`` accuracy on ``n_greedy`` questions; ``avg@k`` (``k = sampled_k``)
    at ``temperature`` on the first ``n_sampled``; and for ``pass_tiers`` ``pass@K`` (``K =
    pass_k``) at ``temperature`` on the first ``n_pass`` — a tier at pass@64 = 0 is out of the
    model's reach, not merely below its greedy mode.

    Returns ``{tier: {"greedy", "n", "avg@8", "n_sampled"[, "pass@64", "n_pass"]}}``.
    """
    import jax

    from upt_jax.data import tasks
    from upt_jax.eval.evaluate import evaluate

    p = {**PROTOCOL, **(protocol or {})}
    key = key if key is not None else jax.random.key(0)
    suites = {t: tasks.generate(t, max(p["n_greedy"], p["n_sampled"], p["n_pass"]), seed=p["eval_seed"]) for t in tiers}
    common = dict(max_new_tokens=p["max_new_tokens"], template=template)
    out = {
        t: {"greedy": float(r.avg_at_k), "n": r.num_questions}
        for t, r in evaluate(
            model, tok, {t: s[: p["n_greedy"]] for t, s in suites.items()}, k=1, temperature=0.0, **common
        ).items()
    }
    k = p["sampled_k"]
    for t, r in evaluate(
        model,
        tok,
        {t: s[: p["n_sampled"]] for t, s in suites.items()},
        k=k,
        temperature=p["temperature"],
        pass_ks=(k,),
        key=key,
        **common,
    ).items():
        out[t].update({f"avg@{k}": float(r.avg_at_k), "n_sampled": r.num_questions})
    if pass_tiers:
        k = p["pass_k"]
        for t, r in evaluate(
            model,
            tok,
            {t: suites[t][: p["n_pass"]] for t in pass_tiers},
            k=k,
            temperature=p["temperature"],
            pass_ks=(k,),
            key=jax.random.fold_in(key, 1),
            **common,
        ).items():
            out[t].update({f"pass@{k}": float(r.pass_at_k[k]), "n_pass": r.num_questions})
    return out


def ship_base(
    run_dir,
    out_dir,
    *,
    family: str,
    measured: dict,
    protocol: dict | None = None,
    command: str = "",
    extra: dict | None = None,
) -> dict:
    """Write the model of ``run_dir`` (its newest checkpoint) as a shipped model directory:
    ``model.json`` (the architecture, tokenizer and template, as the run recorded them),
    ``model.safetensors`` (HF tensor names; `run_model.model_from_run` loads the directory like a
    run directory) and ``record.json`` (the weights' SHA-256, the family, the step, ``measured``
    per-tier rates under ``protocol``, the command that made it, and ``extra``). Returns the record."""
    import shutil

    from upt_jax.models.hf_io import save_hf_checkpoint
    from upt_jax.train import run_model

    model, step = run_model.model_from_run(run_dir, key="run_dir")
    os.makedirs(out_dir, exist_ok=True)
    save_hf_checkpoint(model, out_dir)
    os.remove(os.path.join(out_dir, "config.json"))  # model.json is the architecture; one source only
    shutil.copyfile(
        os.path.join(run_model.run_root(run_dir), run_model.MODEL_FILE), os.path.join(out_dir, run_model.MODEL_FILE)
    )
    record = {
        "family": family,
        "step": int(step),
        "protocol": {**PROTOCOL, **(protocol or {})},
        "measured": measured,
        "command": command,
        **(extra or {}),
        "weights_sha256": run_model.file_sha256(os.path.join(out_dir, run_model.WEIGHTS_FILE)),
    }
    with open(os.path.join(out_dir, run_model.RECORD_FILE), "w") as f:
        json.dump(record, f, indent=2)
    return record
