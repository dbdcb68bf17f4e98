"""Train state, optimiser and shardings.

``TrainState`` is a pytree of arrays only (``step``, ``params``, ``opt_state``, ``rng``) so that
it can be jitted with donated buffers, sharded by the partition rules and checkpointed by
Orbax as is; the NNX graph definition travels beside it (static).
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from upt_jax.models.partition import DEFAULT_RULES, Rules, param_shardings


@flax.struct.dataclass
class TrainState:
    """Attributes:
    step: ``[]`` int32, number of updates applied (skipped updates included).
    params: NNX ``State`` of the model's ``Param`` s.
    opt_state: optax state.
    rng: ``[2]`` uint32 raw PRNG key data (``jax.random.wrap_key_data`` gives the key).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array

    @property
    def key(self) -> jax.Array:
        return jax.random.wrap_key_data(self.rng)


SCHEDULES = ("constant", "cosine", "linear", "wsd")  # make_optimizer's learning-rate schedules


def make_optimizer(
    learning_rate: float = 1e-5,
    *,
    schedule: str = "constant",
    warmup_steps: int = 0,
    total_steps: int = 1000,
    weight_decay: float = 0.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    max_grad_norm: float | None = 1.0,
    name: str = "adamw",
    decay_steps: int = 0,
) -> optax.GradientTransformation:
    """``clip_by_global_norm`` → AdamW (or SGD) with a learning-rate schedule.

    ``schedule``: ``constant`` (after linear warm-up), ``cosine`` or ``linear`` decay to 0 at
    ``total_steps``, or ``wsd`` (warmup–stable–decay: constant after warm-up, then linear to 0
    over the last ``decay_steps`` of ``total_steps``; a run trained at a constant rate can be
    resumed with ``wsd`` to cool down from where it stopped).
    """
    if schedule == "wsd":
        stable_end = max(total_steps - decay_steps, warmup_steps)
        lr = optax.join_schedules(
            [
                optax.linear_schedule(0.0, learning_rate, warmup_steps),
                optax.constant_schedule(learning_rate),
                optax.linear_schedule(learning_rate, 0.0, max(decay_steps, 1)),
            ],
            [warmup_steps, stable_end],
        )
    elif schedule == "constant":
        lr = (
            optax.join_schedules(
                [optax.linear_schedule(0.0, learning_rate, warmup_steps), optax.constant_schedule(learning_rate)],
                [warmup_steps],
            )
            if warmup_steps
            else learning_rate
        )
    elif schedule == "cosine":
        lr = optax.warmup_cosine_decay_schedule(
            0.0, learning_rate, warmup_steps, max(total_steps, warmup_steps + 1), 0.0
        )
    elif schedule == "linear":
        lr = optax.join_schedules(
            [
                optax.linear_schedule(0.0, learning_rate, warmup_steps),
                optax.linear_schedule(learning_rate, 0.0, max(total_steps - warmup_steps, 1)),
            ],
            [warmup_steps],
        )
    else:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")
    if name == "adamw":
        opt = optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    elif name == "sgd":
        opt = optax.sgd(lr)
    else:
        raise ValueError(f"unknown optimizer {name!r}; expected adamw or sgd")
    chain = [optax.clip_by_global_norm(max_grad_norm)] if max_grad_norm else []
    return optax.chain(*chain, opt)


def state_shardings(abstract_state: TrainState, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> TrainState:
    """Shardings for a ``TrainState``: params and the optimiser moments (which mirror the
    parameter paths) by the partition rules; ``step``, ``rng`` and scalars replicated."""
    replicated = NamedSharding(mesh, P())
    return TrainState(
        step=replicated,
        params=param_shardings(abstract_state.params, mesh, rules),
        opt_state=param_shardings(abstract_state.opt_state, mesh, rules),
        rng=replicated,
    )


def trainable_split(params, trainable=None):
    """``(trainable, frozen)`` parts of a params ``State`` by the NNX filter ``trainable``
    (``None``: everything is trained, ``frozen`` is ``None``)."""
    if trainable is None:
        return params, None
    return nnx.split_state(params, trainable, ...)


def create_train_state(
    model,
    tx: optax.GradientTransformation,
    *,
    seed: int = 0,
    mesh: Mesh | None = None,
    rules: Rules = DEFAULT_RULES,
    trainable=None,
):
    """``(graphdef, TrainState, shardings or None)`` from an NNX model.

    With a mesh, the state is created directly with its shardings (optimiser state
    initialised under ``jit`` with ``out_shardings``; nothing is materialised unsharded).

    ``trainable``: an NNX filter (e.g. ``nnx.LoRAParam``) of the variables that are trained; the
    optimiser state covers only those, the rest of ``params`` is frozen (it may then hold
    non-``Param`` variables, such as QLoRA's quantised kernels). ``None``: every ``Param``.
    """
    graphdef, params = nnx.split(model)
    train, frozen = trainable_split(params, trainable)
    others = [
        type(v).__name__
        for v in jax.tree.leaves(train, is_leaf=lambda x: isinstance(x, nnx.Variable))
        if not isinstance(v, nnx.Param)
    ]
    if others:
        raise ValueError(
            f"the model holds non-parameter state ({sorted(set(others))}); upt_jax train states hold Params only"
        )
    if trainable is not None and not jax.tree.leaves(train):
        raise ValueError(f"no variable of the model matches the trainable filter {trainable}")
    rng = jax.random.key_data(jax.random.key(seed))

    def init(params):
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(trainable_split(params, trainable)[0]),
            rng=rng,
        )

    if mesh is None:
        return graphdef, init(params), None
    abstract = jax.eval_shape(init, params)
    shardings = state_shardings(abstract, mesh, rules)
    params = jax.device_put(params, shardings.params)
    state = jax.jit(init, out_shardings=shardings)(params)
    return graphdef, state, shardings
