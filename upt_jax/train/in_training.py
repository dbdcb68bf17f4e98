"""What a run shows of itself while it trains: its sampled completions and an evaluation every N steps.

* ``<run_dir>/completions.jsonl`` (``log.completions``, default on): every rollout of every step,
  one line each: ``{"step", "id", "prompt", "completion", "reward", "finished", "length"}``
  (``prompt``: the question's text, or the chat prompt of a chat row). A resumed run drops the
  lines of the steps after its checkpoint, as ``metrics.jsonl`` does. Process 0 writes it; a
  remote (``gs://``) run directory gets none (one warning).
* ``log.show_completions = N > 0``: every ``N`` steps two of the step's completions are logged.
* ``train.eval_every = N > 0``: every ``N`` steps (and after the last) the current policy answers
  ``train.eval_n`` questions ``train.eval_k`` times each, greedily (``train.eval_k > 1``: at
  ``rollout.temperature``), with ``rollout.max_new_tokens``, scored by the run's reward functions
  (``reward.functions``) or verifiers; logged as ``eval/<suite>/avg@k`` (and
  ``eval/<suite>/mean_reward`` with reward functions) in that step's metrics. The questions:
  ``train.eval_path`` (a file, any layout `upt_jax.data.layouts` reads), else fresh draws of the
  synthetic tiers trained on, else the training file's first ``train.eval_n`` rows.
"""

from __future__ import annotations

import json
import logging
import os

import jax

log = logging.getLogger(__name__)

__all__ = ["StepHooks", "COMPLETIONS_FILE"]

COMPLETIONS_FILE = "completions.jsonl"


class StepHooks:
    """Called by the trainer after each step (`after_step`) and on resume (`truncate_after`)."""

    def __init__(self, trainer):
        c = trainer.config
        self.every_eval = int(c.train.get("eval_every", 0) or 0)
        self.show_every = int(c.log.get("show_completions", 0) or 0)
        self.path = None
        if c.log.get("completions", True) and trainer.online and jax.process_index() == 0:
            if "://" in str(c.run_dir):
                log.warning(
                    "log.completions: %s is remote; %s is written only to a local run directory",
                    c.run_dir,
                    COMPLETIONS_FILE,
                )
            else:
                self.path = os.path.join(c.run_dir, COMPLETIONS_FILE)
        self._suites = None
        self._verifier = None
        self._sampler = None

    # ------------------------------------------------------------------ completions
    def truncate_after(self, step: int | None) -> None:
        """Keep the lines of steps ≤ ``step`` (``None``: none, a fresh run)."""
        if self.path is None or not os.path.exists(self.path):
            return
        with open(self.path) as f:
            kept = [line for line in f if step is not None and step_of(line) <= step]
        with open(self.path, "w") as f:
            f.writelines(kept)

    def _completions(self, trainer, step: int) -> list[dict]:
        from upt_jax.rewards.functions import prompt_of

        out = []
        for g in getattr(trainer, "step_groups", None) or ():
            for resp, reward, done in zip(g["responses"], g["rewards"], g["finished"]):
                out.append(
                    {
                        "step": step,
                        "id": g["record"].get("id"),
                        "prompt": prompt_of(g["record"]),
                        "completion": trainer.tok.decode(resp),
                        "reward": float(reward),
                        "finished": done,
                        "length": len(resp),
                    }
                )
        return out

    # ------------------------------------------------------------------ evaluation
    def _eval_suites(self, trainer) -> dict:
        if self._suites is None:
            from upt_jax.eval.evaluate import synthetic_suites

            c, n = trainer.config, int(trainer.config.train.get("eval_n", 32))
            if c.train.get("eval_path"):
                from upt_jax.eval.inputs import data_suites

                self._suites = {
                    k: v[:n]
                    for k, v in data_suites(
                        [c.train.eval_path], verifier=c.data.verifier, need_answer=trainer.reward_fns is None
                    ).items()
                }
            elif c.data.source == "synthetic":
                self._suites = synthetic_suites(tuple(c.data.tiers), n)
            elif c.data.source == "corpus":
                self._suites = synthetic_suites(tuple(c.data.corpus.tiers), n)
            else:
                self._suites = {"train": list(trainer.records[:n])}
        return self._suites

    def evaluate(self, trainer) -> dict[str, float]:
        """``eval/<suite>/avg@k`` (and ``…/mean_reward``) of the current parameters."""
        from flax import nnx

        from upt_jax.eval.evaluate import evaluate
        from upt_jax.rewards import RoutedVerifier
        from upt_jax.sampling import Sampler

        c = trainer.config
        k = int(c.train.get("eval_k", 1))
        sampler = trainer.sampler
        if sampler is None:  # offline/preference runs: a sampler of their own, made once
            if self._sampler is None:
                self._sampler = Sampler(
                    nnx.merge(trainer.graphdef, trainer.state.params), pad_id=trainer.tok.pad_id, mesh=trainer.mesh
                )
            sampler = self._sampler
        if trainer.reward_fns is None and self._verifier is None:
            self._verifier = RoutedVerifier()
        results = evaluate(
            None,
            trainer.tok,
            self._eval_suites(trainer),
            k=k,
            temperature=c.rollout.temperature if k > 1 else 0.0,
            max_new_tokens=c.rollout.max_new_tokens,
            key=jax.random.key(c.seed),
            template=c.data.template,
            system_prompt=c.data.get("system_prompt"),
            params=trainer.state.params,
            default_verifier=c.data.verifier,
            verifier=self._verifier,
            sampler=sampler,
            reward_fns=trainer.reward_fns,
        )
        out = {}
        for name, r in results.items():
            out[f"eval/{name}/avg@k"] = r.avg_at_k
            if r.mean_reward is not None:
                out[f"eval/{name}/mean_reward"] = r.mean_reward
        if trainer.reward_fns is not None:
            trainer.reward_fns.metrics()  # the evaluation's calls are not the next step's rewards
        return out

    # ------------------------------------------------------------------ the hook
    def after_step(self, trainer, metrics: dict) -> None:
        """Write the step's completions, show a few, evaluate when due (into ``metrics``)."""
        step = int(metrics["step"])
        rows = self._completions(trainer, step) if self.path is not None or self.show_every else []
        if self.path is not None and rows:
            with open(self.path, "a") as f:
                f.writelines(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
        if self.show_every and step % self.show_every == 0:
            for r in rows[:2]:
                log.info("step %d, %s: %r → %r (reward %.3g)", step, r["id"], r["prompt"], r["completion"], r["reward"])
        if self.every_eval and (step % self.every_eval == 0 or step == trainer.config.train.steps):
            metrics.update(self.evaluate(trainer))

    def close(self) -> None:
        if self._verifier is not None:
            self._verifier.close()
            self._verifier = None


def step_of(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return 1 << 62  # an unreadable line is dropped with the steps after a resume
