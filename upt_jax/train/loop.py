"""The one loop: between steps, a failed background save stops the run and a SIGTERM/SIGINT saves
the step just trained and stops it (`upt_jax.train.preemption`); each step is trained, handed to
the step hooks, logged (JSONL, TensorBoard) and saved; too many diverged updates in a row stop it
(`NonFiniteError`). `Loop` is a mixin: the class using it provides ``config``, ``state``, ``ckpt``,
``metrics_log``, ``nonfinite_in_a_row``, ``train_step()`` (which calls `count_divergence`) and
``save(force)``, and may add ``hooks`` (`upt_jax.train.in_training.StepHooks`) and checkpointers
(`checkpointers`). The policy's `Trainer`, the reward-model and the PRM trainer run on it."""

from __future__ import annotations

import logging

import jax
import numpy as np

log = logging.getLogger(__name__)

__all__ = ["NonFiniteError", "progress_postfix", "Loop"]


def progress_postfix(metrics: dict) -> dict:
    """The progress bar's numbers: ``loss`` (the method's objective: the NLL for SFT, the clipped
    PPO objective, the DPO loss, ...), ``reward`` (mean rollout reward) and ``acc`` (a pair or step
    accuracy: DPO-family terms, reward models, PRMs) where the step has them."""
    out = {
        "loss": metrics.get("loss"),
        "reward": metrics.get("reward/mean"),
        "acc": next((v for k, v in metrics.items() if k.endswith("accuracy")), None),
    }
    return {k: round(float(v), 3) for k, v in out.items() if v is not None}


def run_trainer(make, config) -> list[dict]:
    """``make(config).run()``, then ``close()``: the metrics of this call. A SIGTERM/SIGINT while
    the trainer is being built (model, restore, first compiles) is kept for the loop's first
    check, which stops before the first step. Policy, reward-model and PRM runs alike."""
    from upt_jax.train import preemption

    with preemption.stop_signals(config.checkpoint.get("preemption_grace_s")):
        trainer = make(config)
        try:
            return trainer.run()
        finally:
            trainer.close()


class NonFiniteError(RuntimeError):
    """Too many consecutive updates were skipped for a non-finite loss or gradient."""


class Loop:
    """The loop of a trainer (see the module docstring)."""

    hooks = None  # called after each step: hooks.after_step(trainer, metrics)

    def step_number(self) -> int:
        """The number of steps trained (an online step of ``update_epochs`` updates counts once)."""
        return int(self.state.step) // max(1, self.config.train.update_epochs)

    def count_divergence(self, metrics: dict) -> None:
        """Count a diverged update (a non-finite loss, gradient or result, or an update larger than
        the parameters; the critic's too) towards the stop; an applied update resets the count, a
        skip for ``skip_grad_norm`` alone neither counts nor resets."""
        diverged = (
            metrics["nonfinite"]
            or metrics["update_too_large"]
            or metrics.get("critic/nonfinite", 0)
            or metrics.get("critic/update_too_large", 0)
        )
        if diverged:
            self.nonfinite_in_a_row += 1
        elif not metrics["skipped"]:
            self.nonfinite_in_a_row = 0

    def write_config(self) -> None:
        """``<run_dir>/config.json`` (process 0: one writer per run directory), through
        ``etils.epath`` (a ``gs://`` run directory works); a resumed run must keep what the record
        it replaces says it trains (`upt_jax.train.recipe_io.check_resumed_config`)."""
        from upt_jax.train.recipe_io import check_resumed_config

        check_resumed_config(self.config.run_dir, self.config)  # before the record is replaced
        if jax.process_index() == 0:
            from etils import epath

            (epath.Path(self.config.run_dir) / "config.json").write_text(self.config.to_json_best_effort(indent=2))

    def checkpointers(self) -> list:
        """Every `Checkpointer` the run saves to (the policy's first)."""
        return [self.ckpt]

    def wait_for_saves(self) -> None:
        for c in self.checkpointers():
            c.wait()

    def stop_request(self, stop) -> int:
        """Between steps (and before the first): raise ``CheckpointSaveError`` when a background
        save has failed, else return the number of the signal that stops the run (0: none).

        With several processes both come from one all-gather, so every process stops after the
        same step (and saves the same step) and none is left in a collective the others left;
        a single process reads its own flags (no collective)."""
        from upt_jax.train.checkpoint import CheckpointSaveError

        failed = any(c.save_failed() for c in self.checkpointers())
        signum = stop.requested
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            codes = np.asarray(multihost_utils.process_allgather(np.int32(signum | (int(failed) << 8))))
            failed, signum = bool(np.any(codes >> 8)), int(np.max(codes & 0xFF))
        if failed:
            self.wait_for_saves()  # raises this process's CheckpointSaveError
            raise CheckpointSaveError(
                "a checkpoint save failed on another process of this run (see its "
                "log); stopping before the next step, as every process does"
            )
        return signum

    def preempt(self, signum: int, start: int, history: list[dict]):
        """Stop on signal ``signum``: save the step just trained, wait until it is committed and
        raise ``Preempted`` (the command line exits 0)."""
        from upt_jax.train.preemption import Preempted, signal_name

        step = self.step_number()
        name = signal_name(signum)
        if step > start:
            self.save(force=True)
            self.wait_for_saves()
            msg = f"stopped by {name} at step {step}; checkpoint saved; rerun the same command to resume"
        elif step > 0:
            msg = (
                f"stopped by {name} at step {step}, before this run trained a step (checkpoint step {step} "
                "is where it started); rerun the same command to resume"
            )
        else:
            msg = f"stopped by {name} before the first step; nothing to save; rerun the same command to start"
        log.warning("%s", msg)
        raise Preempted(msg, signal_name=name, step=step, history=history)

    def run(self) -> list[dict]:
        """Train until ``config.train.steps``; returns this call's metrics (one dict per step).

        Between steps: a background save that failed raises ``CheckpointSaveError`` (naming the
        directory and its free space); a SIGTERM or SIGINT received meanwhile saves the step just
        trained, waits for the save and raises ``upt_jax.train.preemption.Preempted`` (see that
        module: a second signal exits at once, ``checkpoint.preemption_grace_s`` bounds the wait).
        """
        from tqdm.auto import tqdm

        from upt_jax.train import preemption

        with preemption.stop_signals(self.config.checkpoint.get("preemption_grace_s")) as stop:
            return self._run(stop, tqdm)

    def _run(self, stop, tqdm) -> list[dict]:
        total = self.config.train.steps
        start = self.step_number()
        history = []
        bar = tqdm(
            total=total,
            initial=start,
            desc=self.config.name,
            disable=not self.config.log.progress or jax.process_index() != 0,
        )
        try:
            for _ in range(start, total):
                signum = self.stop_request(stop)
                if signum:
                    self.preempt(signum, start, history)
                metrics = self.train_step()
                if self.hooks is not None:
                    self.hooks.after_step(self, metrics)
                history.append(metrics)
                if jax.process_index() == 0:
                    self.metrics_log.write(metrics)
                bar.update(1)
                bar.set_postfix(progress_postfix(metrics))
                if self.nonfinite_in_a_row >= self.config.train.max_nonfinite_in_a_row:
                    self.ckpt.wait()
                    raise NonFiniteError(
                        f"{self.nonfinite_in_a_row} updates in a row diverged (a non-finite loss, gradient "
                        f"or updated parameters, or an update larger than train.skip_update_ratio × the "
                        f"parameters; last at step {metrics['step']}) and none was applied; "
                        + (
                            f"the last good checkpoint is step {self.ckpt.latest_step()} in {self.ckpt.directory}"
                            if self.ckpt.latest_step() is not None
                            else f"no checkpoint was saved in {self.ckpt.directory}"
                        )
                    )
                if not metrics["skipped"]:
                    self.save()
            self.save(force=True)
            self.wait_for_saves()
        finally:
            bar.close()
        return history
