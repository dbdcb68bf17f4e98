"""The experiment config's schema: one table of every key — its type, allowed values, default
and a one-line doc — read by the command line (overrides, ``upt train --config F --help``) and
by validation, so the three cannot disagree.

    from upt_jax.train import schema
    schema.validate(config)             # every key in its domain; before anything is read or built
    print(schema.describe(config))      # what ``upt train --config grpo --help`` prints
    schema.recipe_hparams("grpo")       # {"eps": Key(...), "kl_coef": Key(...), ...}

`keys()` covers every key of ``base_config()`` (defaults are read from it, so they cannot drift;
``tests/train/test_schema.py`` checks both name the same keys) and the sections that some modes
add (``reward_model.*`` for ``mode=reward_model|prm``, ``star.*`` for ``mode=star``). Four keys
are open dicts whose entries come from the code they configure: ``recipe.hparams`` (the
configured recipe constructor's keyword arguments, from its signature), ``model.overrides`` and
``teacher.overrides`` (``ModelConfig`` fields) and ``data.fields`` (``FieldMap`` columns).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib

# the schema's parts, importable from here as before
from upt_jax.train.schema_domains import (
    ConfigError,
    Domain,
    Key,
    anything,
    choice,
    flag,
    names,
    number,
    plain,
    task_tiers,
    text,
)
from upt_jax.train.schema_hparams import check_hparams, recipe_hparams, recipe_names
from upt_jax.train.schema_keys import MODES, OPEN_KEYS, SECTIONS, flatten, keys

__all__ = [
    "ConfigError",
    "Domain",
    "Key",
    "anything",
    "choice",
    "flag",
    "names",
    "number",
    "plain",
    "task_tiers",
    "text",
    "check_hparams",
    "recipe_hparams",
    "recipe_names",
    "MODES",
    "OPEN_KEYS",
    "SECTIONS",
    "flatten",
    "keys",
    "is_pipeline",
    "validate",
    "open_key",
    "parse_value",
    "apply_override",
    "describe",
]


# ----------------------------------------------------------------------------- validation
def is_pipeline(config) -> bool:
    return "order" in config


def validate(config, prefix: str = "config.", recipe=None) -> None:
    """Every key of ``config`` is a schema key and its value is in the key's domain; raises
    ``ConfigError`` naming the ``config.`` key and the allowed values. Reads no file, builds
    nothing. A pipeline config: every stage (``config.<stage>.…``); a comparison config
    (``mode=comparison``): nothing here (each arm is validated when it runs). ``recipe``: a recipe
    value the run trains (``train.recipe_io``): ``recipe.name`` may name it, with no hparams."""
    if is_pipeline(config):
        for name in config.order:
            if name in config:
                validate(config[name], f"{prefix}{name}.")
        return
    if config.get("mode") == "comparison":
        return
    table = keys()
    values = flatten(config)
    mode = values.get("mode", "online")
    for path, v in values.items():
        if path not in table:
            close = difflib.get_close_matches(path, list(table), n=1)
            raise ConfigError(
                f"{prefix}{path} is not a config key"
                + (f"; did you mean {prefix}{close[0]}?" if close else "")
                + " (`upt train --config F --help` lists every key)"
            )
    for path, key in table.items():
        if key.section and path not in values:
            if mode in SECTIONS[key.section]:
                raise ConfigError(
                    f"{prefix}{key.section} is missing: mode={mode} reads {prefix}{path} "
                    f"({key.doc}); see experiments/{'star' if key.section == 'star' else mode}.py"
                )
            continue
        if path not in values:  # an older config without the key: the code's default applies
            continue
        if not (path == "recipe.name" and recipe is not None and values[path] == recipe.name):
            key.check(values[path], prefix)
        if key.entries is not None:
            if path == "recipe.hparams":
                continue
            entries, given = key.entries(config), plain(values[path]) or {}
            for k, v in given.items():
                if k not in entries:
                    raise ConfigError(f"{prefix}{path}.{k}: not one of its keys: {', '.join(entries)}")
                entries[k].check(v, prefix)
    if "recipe" in config and (recipe is None or config.recipe.name in recipe_names()):
        check_hparams(config, prefix)
    elif "recipe" in config and plain(config.recipe.get("hparams")):
        raise ConfigError(f"{prefix}recipe.hparams: recipe {recipe.name!r} is a value; it takes no hparams")
    if values.get("data.system_prompt") is not None and values.get("data.template") != "chat":
        raise ConfigError(
            f"{prefix}data.system_prompt is set but {prefix}data.template="
            f"{values.get('data.template')!r}: only the chat template has a system message"
        )


# ----------------------------------------------------------------------------- the command line
def open_key(path: str) -> tuple[str, str, str] | None:
    """``(prefix, open key, entry)`` when ``path`` (an override's dotted path, maybe under a
    pipeline stage's ``prefix``) names an entry of an open dict, e.g.
    ``grpo.recipe.hparams.kl_coef`` → ``("grpo.", "recipe.hparams", "kl_coef")``; else None."""
    for open_path in OPEN_KEYS:
        head, sep, entry = (
            path.rpartition("." + open_path + ".")
            if not path.startswith(open_path + ".")
            else ("", ".", path[len(open_path) + 1 :])
        )
        if sep and entry and "." not in entry:
            return (head + "." if head else ""), open_path, entry
    return None


def parse_value(raw: str, domain: Domain):
    """A command-line string as a value of ``domain``'s type (``None``/``none`` when optional)."""
    s = raw.strip()
    if s.lower() in ("none", "null") and (domain.optional or domain.type is object):
        return None
    t = domain.type
    if t is bool:
        if s.lower() in ("true", "1", "yes", "on"):
            return True
        if s.lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{raw!r} is not a bool")
    if t is int:
        return int(s)
    if t is float:
        return float(s)
    if t is str:
        return raw
    try:
        return ast.literal_eval(s)
    except (ValueError, SyntaxError):
        return raw


def apply_override(config, path: str, raw: str) -> None:
    """Sets the open-dict entry ``path`` (see `open_key`) of ``config`` from the command-line
    string ``raw``, typed by its schema entry (a recipe's hyper-parameter: by the configured
    recipe, after every other override). Raises ``ConfigError`` naming the key."""
    import ml_collections

    prefix, open_path, entry = open_key(path)
    sub = config
    for part in prefix.rstrip(".").split(".") if prefix else ():
        if part not in sub:
            raise ConfigError(f"config.{path}: config.{prefix.rstrip('.')} does not exist")
        sub = sub[part]
    entries = keys()[open_path].entries(sub)
    where = f"recipe {sub.recipe.name!r}" if open_path == "recipe.hparams" else f"config.{prefix}{open_path}"
    if entry not in entries:
        raise ConfigError(f"config.{path}: {where} has no key {entry!r}; its keys: {', '.join(entries) or 'none'}")
    key = entries[entry]
    try:
        value = parse_value(raw, key.domain)
    except ValueError as e:
        raise ConfigError(f"config.{path}={raw!r}: must be {key.domain.allowed} ({e})") from e
    key.check(value, f"config.{prefix}")
    head, _, last = open_path.rpartition(".")
    parent = sub[head] if head else sub
    current = parent[last]
    d = dict(plain(current) or {})
    d[entry] = value
    parent[last] = ml_collections.ConfigDict(d, type_safe=False)


def _show(v) -> str:
    if isinstance(v, str):
        return v if v else "''"
    return repr(plain(v))


def describe(config=None, *, title: str = "") -> str:
    """The schema as text for ``--help``: one entry per key, ``KEY=DEFAULT  TYPE: ALLOWED`` and its
    doc; the defaults are ``config``'s values (None: ``base_config()``'s, with every recipe's
    hyper-parameters), the hyper-parameters the configured recipe's."""
    lines = [title] if title else []
    if config is not None and is_pipeline(config):
        lines.append(
            f"a pipeline: stages {', '.join(config.order)} in order, each set with "
            "--config.STAGE.KEY=VALUE; run_dir: the pipeline's directory"
        )
        for name in config.order:
            lines += ["", f"== stage {name} (--config.{name}.KEY=VALUE)", describe(config[name], title="")]
        return "\n".join(lines)
    if config is not None and config.get("mode") == "comparison":
        lines.append("a comparison config (its arms are experiments, each validated when it runs); its keys:")
        lines += [f"  {p}={_show(v)}" for p, v in flatten(config).items()]
        return "\n".join(lines)
    values = flatten(config) if config is not None else {}
    mode = values.get("mode", "online")

    def entry(path, key, value, indent="  "):
        lines.append(f"{indent}{path}={_show(value)}  {key.type}: {key.domain.allowed}")
        lines.append(f"{indent}    {key.doc}")

    for path, key in keys().items():
        if key.section and config is not None and path not in values and mode not in SECTIONS[key.section]:
            continue
        value = values.get(path, key.default)
        if key.section:
            key = dataclasses.replace(key, doc=f"{key.doc} [mode={'|'.join(SECTIONS[key.section])}]")
        if key.entries is None:
            entry(path, key, value)
            continue
        entry(path, key, value if path != "recipe.hparams" else (plain(value) or {}))
        if path == "recipe.hparams":
            names = [config.recipe.name] if config is not None else recipe_names()
            for name in names:
                given = plain(config.recipe.hparams) or {} if config is not None else {}
                lines.append(f"    recipe {name}:" + ("" if recipe_hparams(name) else " no hyper-parameters"))
                for k, hk in recipe_hparams(name).items():
                    entry(hk.path, hk, given.get(k, hk.default), indent="      ")
        else:
            sub = config if config is not None else _base()
            given = plain(values.get(path)) or {}
            for k, ek in key.entries(sub).items():
                entry(ek.path, ek, given.get(k, ek.default), indent="      ")
    return "\n".join(lines)


def _base():
    from upt_jax.train.config import base_config

    return base_config()
