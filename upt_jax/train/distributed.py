"""Multi-process start-up: the one place that calls ``jax.distributed.initialize()``.

    from upt_jax.train import distributed
    info = distributed.initialize()     # before anything touches a jax backend
    info.process_index, info.process_count

Every entry point that trains (``upt train``, ``upt pipeline``, the launch scripts in
``launch/``) goes through ``initialize()``. It decides from the environment whether this process
is one of several, and if so joins them; a single process (a laptop, one GPU box, CI) does
nothing and pays nothing. How the run is detected, first match wins:

============================  =============================================================
``UPT_DISTRIBUTED=0``          never initialise (force single-process)
``UPT_COORDINATOR`` + ...      explicit: ``UPT_COORDINATOR=host:port``, ``UPT_NUM_PROCESSES``,
                               ``UPT_PROCESS_ID`` (and optionally ``UPT_LOCAL_DEVICE_IDS=0,1``)
SLURM                          ``SLURM_JOB_ID`` and ``SLURM_NTASKS > 1`` (one task per node or
                               per GPU, ``srun``): JAX reads the node list and task ids
Cloud TPU VM slice             ``TPU_WORKER_HOSTNAMES`` / ``TPU_PROCESS_ADDRESSES`` with more
                               than one worker, or ``UPT_DISTRIBUTED=1`` (set by
                               ``launch/tpu_vm.sh``): JAX asks the TPU metadata server
``UPT_DISTRIBUTED=1``          always initialise, letting JAX auto-detect every parameter
============================  =============================================================

After initialisation ``jax.devices()`` lists every process's devices: meshes built from it are
global, and arrays sharded over them are not fully addressable from one process (read them on the
host with ``to_host``). On CPU the cross-process collectives use gloo.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["DistributedInfo", "detect", "initialize", "is_primary", "to_host"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclasses.dataclass(frozen=True)
class DistributedInfo:
    """What ``initialize`` did. ``method``: ``single`` | ``explicit`` | ``slurm`` | ``tpu`` | ``auto``."""

    method: str
    process_index: int = 0
    process_count: int = 1
    initialized: bool = False


def detect(environ=None) -> tuple[str, dict]:
    """``(method, kwargs for jax.distributed.initialize)`` from the environment (pure: no jax).

    Raises ``ValueError`` for an incomplete or inconsistent explicit setting.
    """
    env = os.environ if environ is None else environ
    flag = env.get("UPT_DISTRIBUTED", "").strip().lower()
    if flag in _FALSE:
        return "single", {}
    explicit = {k: env.get(k) for k in ("UPT_COORDINATOR", "UPT_NUM_PROCESSES", "UPT_PROCESS_ID")}
    if any(explicit.values()):
        missing = [k for k, v in explicit.items() if not v]
        if missing:
            raise ValueError(
                f"multi-process run: {', '.join(missing)} not set (UPT_COORDINATOR=host:port, "
                "UPT_NUM_PROCESSES and UPT_PROCESS_ID go together)"
            )
        try:
            n, i = int(explicit["UPT_NUM_PROCESSES"]), int(explicit["UPT_PROCESS_ID"])
        except ValueError as e:
            raise ValueError(f"UPT_NUM_PROCESSES / UPT_PROCESS_ID must be integers: {e}") from e
        if n < 1 or not 0 <= i < n:
            raise ValueError(f"UPT_PROCESS_ID={i} must be in [0, UPT_NUM_PROCESSES={n})")
        if ":" not in explicit["UPT_COORDINATOR"]:
            raise ValueError(f"UPT_COORDINATOR={explicit['UPT_COORDINATOR']!r} must be host:port")
        if n == 1:
            return "single", {}
        kw = dict(coordinator_address=explicit["UPT_COORDINATOR"], num_processes=n, process_id=i)
        if env.get("UPT_LOCAL_DEVICE_IDS"):
            kw["local_device_ids"] = [int(x) for x in env["UPT_LOCAL_DEVICE_IDS"].split(",")]
        return "explicit", kw
    if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        return "slurm", {}
    hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES") or ""
    if len([h for h in hosts.split(",") if h.strip()]) > 1:
        return "tpu", {}
    if flag in _TRUE:
        return "auto", {}
    if flag:
        raise ValueError(f"UPT_DISTRIBUTED={flag!r}: use 1 (always initialise) or 0 (never)")
    return "single", {}


def _already_initialized() -> bool:
    from jax._src import distributed as _dist

    return _dist.global_state.client is not None


def initialize(environ=None) -> DistributedInfo:
    """Join the other processes of a multi-process run (``jax.distributed.initialize``) when the
    environment says there are any (see the module docstring); otherwise do nothing.

    Call it once, before any jax computation or ``jax.devices()``. Calling it again is a no-op.
    """
    import jax

    method, kw = detect(environ)
    if method == "single":
        return DistributedInfo("single", jax.process_index(), jax.process_count(), False)
    if not _already_initialized():
        # CPU processes need a cross-process collective implementation (a no-op elsewhere)
        try:
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        except Exception:  # noqa: BLE001 - older/newer jax without the option
            pass
        log.info("jax.distributed.initialize(%s) [%s]", ", ".join(f"{k}={v}" for k, v in kw.items()), method)
        jax.distributed.initialize(**kw)
    info = DistributedInfo(method, jax.process_index(), jax.process_count(), True)
    log.info(
        "process %d of %d; %d local / %d global devices",
        info.process_index,
        info.process_count,
        jax.local_device_count(),
        jax.device_count(),
    )
    return info


def is_primary() -> bool:
    """Process 0: the one that writes metrics, configs and other run-directory files."""
    import jax

    return jax.process_index() == 0


def to_host(x) -> np.ndarray:
    """A ``jax.Array`` (or anything array-like) as a numpy array holding its global value.

    Works for arrays that are not fully addressable (sharded over several processes' devices):
    those are gathered from every process, so every process must call this with the same array
    (a collective).
    """
    import jax

    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
