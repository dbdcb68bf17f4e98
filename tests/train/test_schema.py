"""The config schema (``upt_jax.train.schema``) is the one table of keys: it names exactly
``base_config()``'s keys, every recipe's hyper-parameters, and rejects every value outside a key's
domain — with a message naming the ``config.`` key and the allowed values — before anything is
read or built (issue #20 item 2)."""

import importlib
import inspect
import math
import re

import ml_collections
import pytest

from experiments import grpo, reward_model, sft, sft_then_grpo
from tests.test_experiments import COVERED_ELSEWHERE, RUN_HERE
from tests.train.test_trainer import shrink
from upt_jax import dispatch, upge
from upt_jax.train import schema
from upt_jax.train import trainer as trainer_lib
from upt_jax.train.config import base_config
from upt_jax.train.trainer import Trainer, train


@pytest.fixture
def nothing_built(monkeypatch):
    """Reading the tokenizer or the data, or building a model, fails the test."""
    import upt_jax.data

    def fail(*a, **k):
        pytest.fail("the config error came after something was read or built")

    monkeypatch.setattr(trainer_lib, "build_model", fail)
    monkeypatch.setattr(trainer_lib, "load_records", fail)
    monkeypatch.setattr(upt_jax.data, "load_tokenizer", fail)


def _set(c, path, value):
    *parents, last = path.split(".")
    node = c
    for p in parents:
        node = node[p]
    node[last] = value
    return c


# ----------------------------------------------------------------------------- the table
def test_schema_names_exactly_the_keys_of_base_config():
    table = {p for p, k in schema.keys().items() if not k.section}
    flat = set(schema.flatten(base_config()))
    assert flat - table == set(), f"base_config keys missing from upt_jax/train/schema.py: {sorted(flat - table)}"
    assert table - flat == set(), f"schema keys not in base_config(): {sorted(table - flat)}"
    for path, key in schema.keys().items():
        assert key.doc, path
        assert key.default in key.domain, f"{path}: default {key.default!r} outside {key.domain.allowed}"


def test_mode_sections_match_the_experiments_that_use_them():
    for module, section in (
        (reward_model, "reward_model"),
        (importlib.import_module("experiments.prm"), "reward_model"),
        (importlib.import_module("experiments.star"), "star"),
    ):
        given = module.get_config()[section].to_dict()
        declared = {p.split(".", 1)[1]: k.default for p, k in schema.keys().items() if k.section == section}
        assert given == declared, module.__name__


@pytest.mark.parametrize("name", schema.recipe_names())
def test_every_recipe_hyperparameter_is_in_the_schema(name):
    """From the constructor's signature (defaults included); each has a domain and a doc."""
    base = "hpt" if name.startswith("hpt_") else name
    params = {
        p.name: p.default
        for p in inspect.signature(upge.RECIPES[base]).parameters.values()
        if p.kind is not p.VAR_KEYWORD and not (base != name and p.name == "variant")
    }
    hp = schema.recipe_hparams(name)
    assert {k: v.default for k, v in hp.items() if k in params} == params
    for k, key in hp.items():
        assert key.doc and key.domain.allowed != "any value", f"{name}.{k}: add it to schema_hparams._HPARAMS"
        assert key.default in key.domain, f"{name}.{k}"
    cfg = base_config()
    cfg.recipe.name = name
    cfg.recipe.hparams = ml_collections.ConfigDict(
        {k: v.default for k, v in hp.items() if not v.only_with}, type_safe=False
    )
    schema.validate(cfg)  # every default, passed explicitly, builds the recipe


@pytest.mark.parametrize("spec", sorted(set(COVERED_ELSEWHERE) | set(RUN_HERE) | {"grpo:dapo", "dpo:simpo"}))
def test_every_shipped_experiment_validates(spec):
    name, _, arg = spec.partition(":")
    schema.validate(importlib.import_module(f"experiments.{name}").get_config(arg or None))


# ----------------------------------------------------------------------------- walking the table
def _walk_cases():
    for path, key in schema.keys().items():
        if key.section:
            continue
        for value in key.domain.outside:
            yield pytest.param(path, value, id=f"{path}={value!r}")


@pytest.mark.parametrize("path,value", list(_walk_cases()))
def test_every_key_rejects_values_outside_its_domain_before_anything_is_built(tmp_path, nothing_built, path, value):
    c = shrink(grpo.get_config(), tmp_path / "run", steps=1)
    try:
        _set(c, path, value)
    except (TypeError, ValueError):  # the ConfigDict's own type check already refuses it
        pytest.skip(f"ml_collections refuses {value!r} for {path}")
    expected = re.escape(f"config.{path}")
    with pytest.raises(schema.ConfigError, match=expected):
        Trainer(c)


def test_the_walk_reaches_every_key():
    """Every key with a domain narrower than its type has an outside value the config accepts (so
    the walk above tests it); only free strings (``data.system_prompt``) have none."""
    missing = []
    for path, key in schema.keys().items():
        if key.section or not key.domain.outside:
            continue
        for value in key.domain.outside:
            c = grpo.get_config()
            try:
                _set(c, path, value)
            except (TypeError, ValueError):
                continue
            break
        else:
            missing.append(path)
    assert not missing, f"no out-of-domain value reaches these keys: {missing}"


@pytest.mark.parametrize("name", schema.recipe_names())
def test_every_recipe_hyperparameter_rejects_values_outside_its_domain(name):
    for k, key in schema.recipe_hparams(name).items():
        for value in key.domain.outside:
            c = base_config()
            c.recipe.name = name
            c.recipe.hparams = ml_collections.ConfigDict({k: value}, type_safe=False)
            with pytest.raises(schema.ConfigError, match=re.escape(f"config.recipe.hparams.{k}=")):
                schema.validate(c)


@pytest.mark.parametrize(
    "path,value", [(p, v) for p, k in schema.keys().items() if k.section for v in k.domain.outside]
)
def test_mode_section_keys_are_checked_by_reward_model_training(tmp_path, nothing_built, path, value):
    c = shrink(reward_model.get_config(), tmp_path / "rm", steps=1)
    if path.startswith("star."):
        c = shrink(importlib.import_module("experiments.star").get_config(), tmp_path / "star", steps=1)
    try:
        _set(c, path, value)
    except (TypeError, ValueError):
        pytest.skip(f"ml_collections refuses {value!r} for {path}")
    with pytest.raises(schema.ConfigError, match=re.escape(f"config.{path}")):
        dispatch.train(c)  # mode star: STaR rounds, dispatched above the trainer


# ----------------------------------------------------------------------------- issue #20 item 2
CASES = {  # name: (key, value, what the message must say)
    "max_grad_norm_negative": ("train.max_grad_norm", -1.0, r"> 0, or None \(no clipping\)"),
    "max_grad_norm_zero": ("train.max_grad_norm", 0.0, r"> 0, or None"),
    "learning_rate_negative": ("train.learning_rate", -1e-4, r"a finite float > 0"),
    "learning_rate_nan": ("train.learning_rate", math.nan, r"a finite float > 0"),
    "learning_rate_inf": ("train.learning_rate", math.inf, r"a finite float > 0"),
    "update_epochs_zero": ("train.update_epochs", 0, r"an int ≥ 1"),
    "schedule_unknown": ("train.schedule", "cosin", r"one of constant, cosine, linear"),
    "verifier_unknown": ("data.verifier", "maths", r"one of math, math_strict, integer, exact, choice"),
    "checkpoint_keep_zero": ("checkpoint.keep", 0, r"an int ≥ 1"),
    "checkpoint_every_negative": ("checkpoint.every", -5, r"an int ≥ 0"),  # 0: at the last step only
    "max_new_tokens_zero": ("rollout.max_new_tokens", 0, r"an int ≥ 1"),
    "temperature_negative": ("rollout.temperature", -1.0, r"a finite float ≥ 0"),
    "top_p_zero": ("rollout.top_p", 0.0, r"a finite float in \(0, 1\]"),
    "critic_learning_rate_negative": ("critic.learning_rate", -1.0, r"> 0"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_issue20_configs_that_silently_meant_something_else_are_rejected(tmp_path, nothing_built, case):
    path, value, allowed = CASES[case]
    c = _set(shrink(grpo.get_config(), tmp_path / "run", steps=1), path, value)
    with pytest.raises(schema.ConfigError, match=re.escape(f"config.{path}={value!r}: must be ") + f".*{allowed}"):
        Trainer(c)


def test_unknown_key_is_named_with_the_closest_one(tmp_path, nothing_built):
    c = shrink(grpo.get_config(), tmp_path / "run", steps=1)
    c.train.learnng_rate = 1e-3
    with pytest.raises(
        schema.ConfigError,
        match=r"config\.train\.learnng_rate is not a config key; did you "
        r"mean config\.train\.learning_rate\?",
    ):
        Trainer(c)


def test_unknown_recipe_hyperparameter_lists_the_known_ones(tmp_path, nothing_built):
    c = shrink(grpo.get_config(), tmp_path / "run", steps=1)
    c.recipe.hparams = ml_collections.ConfigDict(dict(kl_coeff=0.1), type_safe=False)
    with pytest.raises(
        schema.ConfigError,
        match=r"config\.recipe\.hparams\.kl_coeff: recipe 'grpo' has no such "
        r"hyper-parameter; its hyper-parameters: eps, kl_coef, kl_kind",
    ):
        Trainer(c)


def test_hpt_gate_keyword_needs_its_gate(tmp_path, nothing_built):
    c = shrink(importlib.import_module("experiments.hpt").get_config(), tmp_path / "run", steps=1)
    c.recipe.hparams.temperature = 0.5  # the soft gate's τ, with the default hard gate
    with pytest.raises(
        schema.ConfigError,
        match=r"config\.recipe\.hparams\.temperature=0\.5 applies to "
        r"gate='soft' only",
    ):
        Trainer(c)
    c.recipe.hparams.gate = "soft"
    schema.validate(c)


def test_model_overrides_entries_are_modelconfig_fields(tmp_path, nothing_built):
    c = shrink(grpo.get_config(), tmp_path / "run", steps=1)
    c.model.overrides = dict(num_layer=2)
    with pytest.raises(
        schema.ConfigError,
        match=r"config\.model\.overrides\.num_layer: not one of its keys: "
        r"vocab_size, hidden_size",
    ):
        Trainer(c)


def test_reward_model_training_validates_before_building(tmp_path, nothing_built):
    c = shrink(reward_model.get_config(), tmp_path / "rm", steps=1)
    c.train.max_grad_norm = -1.0
    with pytest.raises(schema.ConfigError, match=r"config\.train\.max_grad_norm=-1\.0: must be"):
        train(c)


def test_pipeline_validates_every_stage_before_the_first_trains(tmp_path, monkeypatch):
    c = sft_then_grpo.get_config()
    c.run_dir = str(tmp_path / "pipe")
    shrink(c.sft, "unused", steps=1)
    shrink(c.grpo, "unused", steps=1)
    c.grpo.train.update_epochs = 0
    monkeypatch.setattr(trainer_lib, "train", lambda *a, **k: pytest.fail("a stage ran"))
    from upt_jax.train.pipeline import run_pipeline

    with pytest.raises(schema.ConfigError, match=r"config\.grpo\.train\.update_epochs=0: must be an int ≥ 1"):
        run_pipeline(c)


def test_system_prompt_needs_the_chat_template(tmp_path, nothing_built):
    c = shrink(sft.get_config(), tmp_path / "run", steps=1)
    c.data.system_prompt = "You are a helpful assistant."
    with pytest.raises(
        schema.ConfigError,
        match=r"config\.data\.system_prompt is set but config\.data\."
        r"template='zero'",
    ):
        Trainer(c)
