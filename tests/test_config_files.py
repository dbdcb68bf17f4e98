"""Config files are loaded by path (`upt_jax.config_files`), by ``upt train --config``, by a
comparison's arms (from its ``experiments_dir``) and by a config file building on a sibling; the
``experiments`` directory is never imported as a package by the library."""

import sys

import pytest

from upt_jax import cli, config_files
from upt_jax.studies import comparison as cmp

USER_BASE = """
import ml_collections


def get_config(arg=None):
    from upt_jax.train.config import base_config

    c = base_config()
    c.name = "user_" + (arg or "plain")
    return c
"""
USER_DERIVED = """
from upt_jax.config_files import sibling

base = sibling(__file__, "mine")


def get_config(arg=None):
    c = base.get_config(arg)
    c.train.learning_rate = 0.125
    return c
"""


def test_an_experiment_loads_by_path_as_upt_train_loads_it():
    got = config_files.experiment_config("grpo", "dapo")
    assert got.to_dict() == cli.load_config(["--config", "grpo:dapo"]).to_dict()
    assert got.train.dynamic_sampling
    with pytest.raises(FileNotFoundError, match=r"experiment 'nope': no .*nope\.py .*grpo"):
        config_files.experiment_config("nope")


def test_a_user_experiments_directory_with_a_sibling(tmp_path, monkeypatch):
    (tmp_path / "mine.py").write_text(USER_BASE)
    (tmp_path / "derived.py").write_text(USER_DERIVED)
    monkeypatch.delitem(sys.modules, "experiments", raising=False)
    c = config_files.experiment_config("derived", "x", root=str(tmp_path))
    assert (c.name, c.train.learning_rate) == ("user_x", 0.125)
    assert "experiments" not in sys.modules  # nothing imported the shipped directory as a package


def test_a_comparison_arm_comes_from_its_experiments_dir(tmp_path):
    from experiments import testbed

    (tmp_path / "sft.py").write_text(USER_BASE)
    c = testbed.get_config("smoke")
    _, shipped = cmp.arm_config(c, "sft", 0)
    c.experiments_dir = str(tmp_path)
    _, mine = cmp.arm_config(c, "sft", 0)
    assert shipped.name != "user_plain" and mine.name == "user_plain"
    assert mine.run_dir == shipped.run_dir  # the budget and run layout are the comparison's


def test_a_tuple_of_names_on_the_command_line_is_split():
    """``--config.data.tiers=hadd_2,hadd_3`` (as the task docs write it) gives two tiers, not one
    name with a comma: ml_collections leaves a tuple field's value as one string; other overrides
    and literal tuples are untouched."""
    c = config_files.load_config_file(
        "experiments/grpo.py", ["--config.data.tiers=hadd_2,hadd_3", "--config.train.steps=3"]
    )
    assert c.data.tiers == ("hadd_2", "hadd_3") and c.train.steps == 3
    c = config_files.load_config_file("experiments/testbed.py", ["--config.only_arms=('luffy', 'srft')"])
    assert c.only_arms == ("luffy", "srft")
    assert config_files.name_tuple("(a, b)") == config_files.name_tuple(["a", "b"]) == ("a", "b")
    assert config_files.name_tuple(None) == ()
