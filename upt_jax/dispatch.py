"""``train(config)``: run (or resume) an experiment of any mode, as ``upt train`` does.

The mode picks what runs, each a layer below this module, so the arrows only point down:

- ``online``, ``offline``, ``preference``, ``reward_model``, ``prm``: one training run on the loop
  (`upt_jax.train.trainer.train`: the policy's `Trainer` or the reward model's);
- ``star``: STaR rounds (`upt_jax.train.star.run_star`), each round one SFT run;
- ``comparison``: arms × seeds from one base model, evaluated and reported
  (`upt_jax.studies.comparison.run_comparison`); its arms are single runs or pipelines.

What launches runs below this module is given the runner of its runs, or calls the one of what it
runs, and never imports this module: a STaR round is one SFT run (`upt_jax.train.trainer.train`);
a pipeline's stages and a comparison's arms run with the ``run`` they are given (default one
training run), which this `train` (and ``upt pipeline``) sets to itself, so they may be of any mode.

    from upt_jax.dispatch import train
    history = train(config)   # config: an experiments/ module's get_config(), or upt_jax.cli.load_config
"""

from __future__ import annotations

from upt_jax.studies import comparison
from upt_jax.train import star, trainer

__all__ = ["train"]


def train(config) -> list[dict]:
    """Run (or resume) the experiment ``config`` of any mode; returns the metrics of the steps run
    now (``star``: one report per round; ``comparison``: ``[]``, its results are in its run
    directory)."""
    mode = config.get("mode")
    if mode == "star":
        return star.run_star(config)
    if mode == "comparison":  # several arms × seeds, evaluated (experiments/paper_table.py, testbed.py)
        comparison.run_comparison(config, run=train)
        return []
    return trainer.train(config)
