"""Stage pipelines: an ordered list of experiments, each starting from the previous stage's
final parameters (fresh optimiser), run by one command and resumable.

A pipeline config holds one sub-config per stage and their order::

    c = ml_collections.ConfigDict()
    c.run_dir = "runs/sft_then_grpo"
    c.order = ("sft", "grpo")
    c.sft = sft.get_config()
    c.grpo = grpo.get_config()

Stage ``k`` runs in ``<run_dir>/<name>``; when it finishes, ``DONE.json`` is written there.
Stage ``k + 1`` has ``model.init = checkpoint`` on stage ``k``'s directory, so it rebuilds the
architecture stage ``k`` recorded in its ``model.json`` (``run_model.model_from_run``) and takes
its tokenizer and prompt template unless its own config sets them (``run_model.carry_tokenizer``).
A rerun skips finished stages (reporting them) and resumes an unfinished one at its latest
checkpoint, so a pipeline that stopped anywhere continues where it stopped.

``run_dir`` may be a bucket path (``gs://bucket/pipeline``): stage directories are joined as
strings and ``DONE.json`` is read and written through ``etils.epath``.
"""

from __future__ import annotations

import json
import logging
import os
import time

from etils import epath

log = logging.getLogger(__name__)

DONE = "DONE.json"


def stage_configs(config) -> list[tuple[str, object]]:
    """``[(name, stage config)]`` with run directories and hand-offs filled in."""
    if not config.get("order"):
        raise ValueError("a pipeline config needs 'order', the list of stage names")
    stages, previous = [], None
    for name in config.order:
        if name not in config:
            raise ValueError(f"pipeline stage {name!r} has no sub-config 'config.{name}'")
        c = config[name]
        c.run_dir = os.path.join(config.run_dir, name)
        c.name = name
        if previous is not None:
            c.model.init = "checkpoint"
            c.model.checkpoint = previous
        stages.append((name, c))
        previous = c.run_dir
    return stages


def run_pipeline(config, run=None) -> list[dict]:
    """Run the stages in order; returns one report per stage (``status``: ran / already done).

    ``run``: ``(stage config) -> metrics``, what runs one stage (default: one training run,
    `upt_jax.train.trainer.train`); ``upt pipeline`` passes `upt_jax.dispatch.train`, so a stage may
    be of any mode (e.g. STaR rounds after an SFT stage)."""
    from upt_jax.train import schema, trainer

    train = run or trainer.train
    stages = stage_configs(config)
    for name, c in stages:  # every stage's keys, before the first stage trains
        schema.validate(c, prefix=f"config.{name}.")
    reports = []
    for name, c in stages:
        done_file = epath.Path(c.run_dir) / DONE
        if done_file.exists():
            report = dict(json.loads(done_file.read_text()), status="already done")
            print(f"[pipeline] stage {name}: already done ({report.get('steps')} steps) in {c.run_dir}")
            reports.append(report)
            continue
        print(
            f"[pipeline] stage {name}: running in {c.run_dir}"
            + (f", starting from {c.model.checkpoint}" if c.model.init == "checkpoint" else "")
        )
        t0 = time.time()
        history = train(c)
        report = dict(
            stage=name,
            run_dir=c.run_dir,
            steps=c.train.steps,
            last={k: v for k, v in (history[-1] if history else {}).items() if k in ("step", "loss", "reward/mean")},
            seconds=round(time.time() - t0, 1),
        )
        import jax

        if jax.process_index() == 0:  # one writer per run directory (multi-process runs)
            done_file.write_text(json.dumps(report, indent=2))
        reports.append(dict(report, status="ran"))
    return reports
