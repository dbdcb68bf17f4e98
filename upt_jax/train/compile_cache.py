"""JAX's persistent compilation cache, on by default for runs started from the command line or a
``Trainer``, so that a second run of the same config loads its executables instead of compiling
them again (a tiny model's first GRPO step: most of it is XLA compiling the sampler and the update).

    from upt_jax.train import compile_cache
    compile_cache.enable(config)        # once, at an entry point (never at import time)

Where the cache lives, first match wins:

* ``config.compile_cache``: a directory, or ``"off"`` (also ``""``, ``"none"``, ``"0"``) for none;
  ``"auto"`` (the default) defers to
* the environment variable ``UPT_JAX_COMPILE_CACHE`` (a directory, or ``off``), else
* ``$XDG_CACHE_HOME/upt_jax/xla`` (``~/.cache/upt_jax/xla``).

A directory the user gave jax already (``jax_compilation_cache_dir`` set before this call, e.g.
through ``JAX_COMPILATION_CACHE_DIR``) is kept as it is. Entries are keyed by jax on the program,
the compile options, the backend and ``XLA_FLAGS``, so a stale entry is never used; a cache that
cannot be read or written only logs a warning (jax's own behaviour) and the run compiles.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

ENV = "UPT_JAX_COMPILE_CACHE"
OFF = ("off", "", "none", "0", "false")
# compiles shorter than this are not written (an eager op's ~10 ms compile is cheaper than a file
# read); the sampler's and the update's compiles of a tiny model take 0.3-3 s each
MIN_COMPILE_S = 0.1


def default_dir() -> str:
    """``$XDG_CACHE_HOME/upt_jax/xla``, ``~/.cache/upt_jax/xla`` without it."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "upt_jax", "xla")


def resolve(setting: str | None = "auto", environ=None) -> str | None:
    """The cache directory for ``setting`` (``config.compile_cache``): a path, None when off."""
    environ = os.environ if environ is None else environ
    s = "auto" if setting is None else str(setting).strip()
    if s.lower() == "auto":
        s = environ.get(ENV, "auto").strip()
        if s.lower() == "auto":
            return default_dir()
    if s.lower() in OFF:
        return None
    return os.path.abspath(os.path.expanduser(s))


def enable(config=None, *, setting: str | None = None, min_compile_s: float = MIN_COMPILE_S) -> str | None:
    """Point jax's persistent compilation cache at ``resolve(config.compile_cache)`` (or
    ``setting``); returns the directory in use (None: off). Idempotent; a directory already
    configured in jax is kept. Takes effect for compiles after the call, also when the process
    has compiled before (jax decides once per process whether the cache is used: that decision is
    reset here)."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    if setting is None:
        setting = config.get("compile_cache", "auto") if config is not None else "auto"
    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    path = resolve(setting)
    if path is None:
        return None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        log.warning("compilation cache %s cannot be created (%s): compiling without it", path, e)
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_s))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # no size floor: tiny models' entries
    cc.reset_cache()  # a process that compiled before has decided "no cache": decide again
    log.info("XLA compilation cache: %s (config.compile_cache / %s; 'off' disables)", path, ENV)
    return path
