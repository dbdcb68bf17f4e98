"""Training: train state and shardings, the jitted update step, (and, as they land) the
on-policy loop, Orbax checkpoints and stage pipelines. The only package that knows about
meshes, optimisers and checkpoints together."""
from upt_jax.train.state import TrainState, create_train_state, make_optimizer, state_shardings
from upt_jax.train.step import Objective, make_train_step, split_microbatches, upge_objective

__all__ = ["TrainState", "create_train_state", "make_optimizer", "state_shardings", "Objective",
           "make_train_step", "split_microbatches", "upge_objective"]
