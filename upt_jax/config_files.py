"""Config files (the shipped ``experiments/*.py`` and the user's own), loaded by path: the library
never imports them as a package. One loader for all: ``upt train --config PATH[:ARG]``
(`upt_jax.cli.load_config`), a comparison's arms and base (`experiment_config`), and a config file
that builds on a sibling (`sibling`).

    config = load_config_file("experiments/hpt.py:released_code")
    config = experiment_config("grpo", "dapo", root=None)     # <experiments dir>/grpo.py:dapo
    ppo = sibling(__file__, "ppo")                            # in experiments/rlhf_ppo.py
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType

__all__ = [
    "shipped_experiments_dir",
    "experiment_names",
    "resolve_config_file",
    "load_config_file",
    "experiment_config",
    "sibling",
]


def shipped_experiments_dir() -> str:
    """The directory of the shipped ``experiments/*.py``: beside the ``upt_jax`` package (a clone,
    installed editable), else ``experiments/`` in the working directory."""
    import upt_jax

    beside = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(upt_jax.__file__))), "experiments")
    return beside if os.path.isdir(beside) else os.path.abspath("experiments")


def experiment_names(directory: str) -> list[str]:
    return (
        sorted(f[:-3] for f in os.listdir(directory) if f.endswith(".py") and f != "__init__.py")
        if os.path.isdir(directory)
        else []
    )


def resolve_config_file(spec: str) -> str:
    """``--config``'s value as ``PATH[:ARG]``: a file path from the working directory, or a shipped
    experiment by short name (``grpo``, ``grpo:dapo``, ``hpt:released_code``); ``experiments/NAME.py``
    that is not a file here is the shipped one too, so the README's commands work from any directory."""
    path, sep, arg = spec.partition(":")
    if os.path.isfile(path):
        return os.path.abspath(path) + sep + arg
    shipped = shipped_experiments_dir()
    name = path[:-3] if path.endswith(".py") else path
    if "/" not in name or os.path.dirname(name) == "experiments":
        candidate = os.path.join(shipped, os.path.basename(name) + ".py")
        if os.path.isfile(candidate):
            return candidate + sep + arg
    raise SystemExit(
        f"upt: --config {spec!r}: {path!r} is not a file (from {os.getcwd()}) nor a shipped "
        f"experiment ({', '.join(experiment_names(shipped))})"
    )


def load_config_file(spec: str, argv: list[str] | tuple = ()):
    """The config of the file ``PATH[:ARG]`` (``get_config(ARG)``, or ``get_config()`` without an
    ARG), with ``--config.key=value`` overrides from ``argv`` applied (ml_collections'
    ``config_flags``, which loads the file by path)."""
    from absl import flags
    from ml_collections import config_flags

    args = ["upt", "--config", spec, *argv]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config",
        None,
        "experiment config file (experiments/NAME.py[:ARG])",
        flag_values=fv,
        lock_config=False,
        sys_argv=args,
    )
    fv(args)
    config = fv.config
    for arg in argv:  # a tuple of names from the command line: split what ml_collections did not
        key = arg[len("--config.") :].split("=", 1)[0] if arg.startswith("--config.") and "=" in arg else None
        value = _get(config, key) if key else None
        if isinstance(value, tuple) and len(value) == 1 and isinstance(value[0], str) and "," in value[0]:
            _set(config, key, name_tuple(value))
    return config


def name_tuple(value) -> tuple[str, ...]:
    """A tuple of names from a config value: a tuple or list of names, or names given on the
    command line as one string, ``a,b,c``, ``(a,b,c)`` or ``('a', 'b')`` (which ml_collections
    leaves as a 1-tuple of that string for a tuple field)."""
    items = (value,) if isinstance(value, str) else tuple(value or ())
    return tuple(
        name.strip(" '\"") for item in items for name in str(item).strip("()[] ").split(",") if name.strip(" '\"")
    )


def _get(config, dotted: str):
    for part in dotted.split("."):
        if not hasattr(config, "get") or part not in config:
            return None
        config = config[part]
    return config


def _set(config, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        config = config[part]
    config[last] = value


def experiment_config(name: str, arg: str | None = None, *, root: str | None = None):
    """The config of ``<root>/<name>.py`` (``root``: default the shipped experiments directory),
    with ``arg`` (``get_config(arg)``)."""
    directory = root or shipped_experiments_dir()
    path = os.path.join(directory, f"{name}.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"experiment {name!r}: no {path} (the experiments there: "
            f"{', '.join(experiment_names(directory)) or 'none'})"
        )
    return load_config_file(path + (f":{arg}" if arg else ""))


def sibling(config_file: str, name: str) -> ModuleType:
    """The config file ``<name>.py`` beside ``config_file`` (a config file's ``__file__``), loaded
    by path as a module of its own: how one config file builds on another without importing the
    ``experiments`` directory as a package."""
    path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"upt_config_{name}", path)
    if spec is None or not os.path.isfile(path):
        raise FileNotFoundError(f"{config_file}: no sibling config file {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
