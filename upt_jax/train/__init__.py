"""Training: train state and shardings, the jitted update step, Orbax checkpoints, the
rollout → reward → gate → update loop and stage pipelines. The only package that knows about
meshes, optimisers and checkpoints together."""

from upt_jax.train.checkpoint import (
    CheckpointError,
    Checkpointer,
    abstract_with_shardings,
    latest_checkpoint_dir,
    restore_params,
    verify_checkpoint,
)
from upt_jax.train.config import base_config
from upt_jax.train.pipeline import run_pipeline
from upt_jax.train.state import TrainState, create_train_state, make_optimizer, state_shardings
from upt_jax.train.step import Objective, make_train_step, split_microbatches, upge_objective
from upt_jax.train.trainer import NonFiniteError, Trainer, train

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "abstract_with_shardings",
    "latest_checkpoint_dir",
    "restore_params",
    "verify_checkpoint",
    "base_config",
    "run_pipeline",
    "TrainState",
    "create_train_state",
    "make_optimizer",
    "state_shardings",
    "Objective",
    "make_train_step",
    "split_microbatches",
    "upge_objective",
    "NonFiniteError",
    "Trainer",
    "train",
]
