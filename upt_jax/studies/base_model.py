"""Pre-training a testbed's base model until it has learned its base tiers (a stopping criterion,
not a fixed step count on a decaying schedule).

The tiny base models of the synthetic task families learn their procedures abruptly: an audit
saw the held-out pass rate of a 3-digit tier at ≤ 7 % through step 580, 48 % at 600 and 87.5 % at
800, while a cosine schedule was already decaying, so the same config gave base models anywhere
from 35 % to 96 % on one tier. `pretrain_until` trains at a constant learning rate (after warmup)
and evaluates the base tiers greedily every ``eval_every`` steps; it stops once every tier has
reached ``target`` in ``patience`` evaluations in a row (past the transition), or at
``max_steps`` (then ``converged`` is False and the caller decides). Resuming is bitwise (the
trainer's checkpoints), so stopping early changes nothing about the steps that were run.

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

log = logging.getLogger(__name__)

__all__ = ["StopCriterion", "PretrainResult", "pretrain_until"]


@dataclasses.dataclass(frozen=True)
class StopCriterion:
    """When a base model has learned enough.

    Attributes:
      tiers: the tiers it must solve (greedy accuracy on ``n_eval`` held-out questions each).
      target: the greedy accuracy every tier must reach.
      patience: in this many evaluations in a row.
      eval_every: steps between evaluations.
      max_steps: give up here (``converged=False``).
      n_eval: questions per tier (drawn with ``eval_seed``, apart from the training stream).
      eval_seed: the questions' seed.
      max_new_tokens: generation budget per question.
    """

    tiers: tuple[str, ...]
    target: float = 0.9
    patience: int = 2
    eval_every: int = 100
    max_steps: int = 3000
    n_eval: int = 64
    eval_seed: int = 4242
    max_new_tokens: int = 192

    def __post_init__(self):
        if not self.tiers:
            raise ValueError("StopCriterion.tiers is empty")
        if not 0 < self.target <= 1 or self.patience < 1 or self.eval_every < 1 or self.max_steps < 1:
            raise ValueError(f"StopCriterion: 0 < target ≤ 1, patience, eval_every, max_steps ≥ 1 ({self})")


@dataclasses.dataclass
class PretrainResult:
    """``history``: one ``{"step", tier: greedy accuracy}`` per evaluation; ``step``: where
    training stopped; ``converged``: the criterion was met."""

    run_dir: str
    step: int
    converged: bool
    history: list[dict]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _met(history: Sequence[dict], c: StopCriterion) -> bool:
    recent = history[-c.patience:]
    return len(recent) == c.patience and all(all(h[t] >= c.target for t in c.tiers) for h in recent)


def pretrain_until(config, criterion: StopCriterion, *, progress: bool = False) -> PretrainResult:
    """Train ``config`` (offline language modelling, ``schedule`` constant) until ``criterion``.

    Writes ``<run_dir>/pretrain_history.json`` (the `PretrainResult`) after every evaluation; a
    rerun resumes from the run directory's checkpoint and history.
    """
    from flax import nnx

    from upt_jax.data import tasks
    from upt_jax.eval.evaluate import evaluate
    from upt_jax.sampling import Sampler
    from upt_jax.train.trainer import Trainer

    if config.train.schedule != "constant":
        raise ValueError(f"config.train.schedule={config.train.schedule!r}: stopping on a criterion needs a "
                         "schedule that does not depend on the step count ('constant' with warmup_steps)")
    suites = {t: tasks.generate(t, criterion.n_eval, seed=criterion.eval_seed) for t in criterion.tiers}
    path = os.path.join(config.run_dir, "pretrain_history.json")
    history: list[dict] = []
    if os.path.exists(path):
        with open(path) as f:
            history = json.load(f)["history"]
    config.train.steps = min(criterion.max_steps, max([h["step"] for h in history], default=0))
    trainer = Trainer(config)
    try:
        graphdef = trainer.graphdef
        sampler = Sampler(nnx.merge(graphdef, trainer.state.params), pad_id=trainer.tok.pad_id, streams=1)
        step = int(trainer.state.step)
        history = [h for h in history if h["step"] <= step]
        while not _met(history, criterion) and step < criterion.max_steps:
            trainer.config.train.steps = min(criterion.max_steps, step + criterion.eval_every)
            trainer.run()
            step = int(trainer.state.step)
            results = evaluate(None, trainer.tok, suites, k=1, temperature=0.0,
                               max_new_tokens=criterion.max_new_tokens, template=config.data.template,
                               params=trainer.state.params, sampler=sampler)
            entry = {"step": step, **{t: float(r.avg_at_k) for t, r in results.items()}}
            history.append(entry)
            log.info("pretrain %s step %d: %s", config.run_dir, step,
                     ", ".join(f"{t} {entry[t]:.3f}" for t in criterion.tiers))
            if progress:
                print(f"step {step}: " + ", ".join(f"{t} {entry[t]:.3f}" for t in criterion.tiers), flush=True)
            result = PretrainResult(str(config.run_dir), step, _met(history, criterion), history)
            with open(path, "w") as f:
                json.dump(result.to_json(), f, indent=2)
    finally:
        trainer.close()
    return PretrainResult(str(config.run_dir), step, _met(history, criterion), history)
