"""Recipes as values: ``Trainer(config, recipe=...)`` trains a recipe composed in Python, records it in
``<run_dir>/recipe.json`` (user parts with their import paths) and ``upt train`` resumes it by name
in a new process; a resumed run with another recipe is an error.

The composed recipe: GRPO's clip, reference and aggregation + truncated IS + an entropy bonus + an
advantage estimator registered by a user module outside ``upt_jax`` (``tests/train/user_parts.py``).
Its parameters move every step even on an untrained model that earns no reward (the entropy bonus
and the estimator's length term), so a bitwise comparison of final parameters means something.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tests.train.user_parts  # noqa: F401  (registers the user's advantage estimator)
from experiments import grpo
from tests.train.test_crash import _assert_bitwise_equal, _params
from tests.train.test_trainer import shrink
from upt_jax import upge
from upt_jax.train import recipe_io
from upt_jax.train import trainer as trainer_lib
from upt_jax.train.schema import ConfigError
from upt_jax.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
NAME = "grpo_tis_entropy_lp"


def composed_recipe():
    """GRPO + truncated IS + an entropy bonus + the user's ``length_penalised`` advantage."""
    return upge.Recipe(
        NAME,
        (
            upge.Term(
                "pg",
                rollout=upge.Parts(
                    stabiliser=(upge.part("ppo_clip", eps_low=0.2, eps_high=0.2), upge.part("tis", cap=2.0)),
                    reference=upge.part("behaviour"),
                    advantage=upge.part("length_penalised", coef=0.5),
                    aggregation=upge.part("seq-mean-token-mean"),
                ),
                entropy_coef=0.01,
            ),
        ),
    )


@pytest.fixture
def no_model(monkeypatch):
    def build_model(*a, **k):
        pytest.fail("a model was built before the recipe error was reported")

    monkeypatch.setattr(trainer_lib, "build_model", build_model)


def test_a_recipe_value_trains_and_is_recorded(tmp_path):
    c = shrink(grpo.get_config(), tmp_path / "run", steps=1)
    t = Trainer(c, recipe=composed_recipe())
    try:
        (m,) = t.run()
    finally:
        t.close()
    assert c.recipe.name == "grpo"  # the caller's config is left alone; the run's names the recipe
    assert m["skipped"] == 0 and m["grad_norm"] > 0 and m["entropy"] > 0
    run = Path(c.run_dir)
    record = json.loads((run / "recipe.json").read_text())
    assert record["terms"][0]["rollout"]["advantage"]["import"] == "tests.train.user_parts:length_penalised_advantages"
    assert upge.recipe_from_dict(record) == composed_recipe()
    saved = json.loads((run / "config.json").read_text())
    assert saved["recipe"] == {"name": NAME, "hparams": {}}
    # a new run of the same config file names the recorded recipe: it is rebuilt from the record
    again = shrink(grpo.get_config(), run, steps=2)
    again.recipe.name = NAME
    assert recipe_io.get_recipe(again) == composed_recipe()
    assert recipe_io.given_or_recorded(again) == composed_recipe()
    recipe_io.check_resumed(run, composed_recipe())  # the same recipe: no error


def _recorded_run(tmp_path):
    """A run directory with a checkpoint step and the composed recipe's record (no training)."""
    run = tmp_path / "run"
    (run / "checkpoints" / "1").mkdir(parents=True)
    (run / "recipe.json").write_text(json.dumps(upge.recipe_to_dict(composed_recipe())))
    return run


def test_resuming_with_another_recipe_is_an_error(tmp_path, no_model):
    run = _recorded_run(tmp_path)
    c = shrink(grpo.get_config(), run, steps=2)  # plain GRPO on a run of the composed recipe
    with pytest.raises(
        ValueError,
        match=r"holds a checkpoint of a run of recipe 'grpo_tis_entropy_lp'.*recipe "
        r"'grpo' differs \(recipe\.name: 'grpo_tis_entropy_lp' ≠ 'grpo'\)",
    ):
        Trainer(c)
    other = composed_recipe()
    other = upge.Recipe(NAME, (upge.Term("pg", rollout=other.terms[0].rollout, entropy_coef=0.02),))
    with pytest.raises(ValueError, match=r"terms\[0\]\.entropy_coef: 0\.01 ≠ 0\.02"):
        Trainer(shrink(grpo.get_config(), run, steps=2), recipe=other)
    # without a saved step the directory starts afresh: nothing to resume, nothing to compare
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "recipe.json").write_text((run / "recipe.json").read_text())
    recipe_io.check_resumed(fresh, upge.get_recipe("grpo"))


def test_recipe_names_and_values_are_checked(tmp_path, no_model):
    run = _recorded_run(tmp_path)
    c = shrink(grpo.get_config(), tmp_path / "new", steps=1)
    c.recipe.name = NAME  # not registered, and this run directory records nothing
    with pytest.raises(ConfigError, match=r"config\.recipe\.name='grpo_tis_entropy_lp': must be one of"):
        Trainer(c)
    c = shrink(grpo.get_config(), run, steps=2)
    c.recipe.name = NAME
    c.recipe.hparams.eps = 0.1  # a recorded recipe is a value: no hyper-parameters
    with pytest.raises(ConfigError, match=r"recipe\.hparams: recipe 'grpo_tis_entropy_lp' is a value"):
        Trainer(c)
    shadow = upge.Recipe("grpo", composed_recipe().terms)  # a registered recipe's name for another recipe
    with pytest.raises(ValueError, match=r"differs from the registered recipe 'grpo'.*its own name"):
        Trainer(shrink(grpo.get_config(), tmp_path / "x", steps=1), recipe=shadow)
    unknown = upge.Recipe("u", (upge.Term("pg", rollout=upge.Parts(advantage=upge.part("no_such_adv"))),))
    with pytest.raises(ValueError, match=r"unknown advantage 'no_such_adv'"):
        Trainer(shrink(grpo.get_config(), tmp_path / "y", steps=1), recipe=unknown)
    # the registered recipe itself, given as a value, keeps its registered name and hyper-parameters
    c = shrink(grpo.get_config(), tmp_path / "z", steps=1)
    c.recipe.hparams.kl_coef = 0.04
    named = recipe_io.config_for(c, upge.get_recipe("grpo", kl_coef=0.04))
    assert named.recipe.name == "grpo" and named.recipe.hparams.to_dict() == {"kl_coef": 0.04}


# ----------------------------------------------------------------------------- kill, then `upt train`
STEPS = 4
WAIT_S = 300
ARGV = [
    "--config",
    "experiments/grpo.py",
    "--config.model.overrides.num_layers=1",
    "--config.data.tiers=('add_2',)",
    "--config.data.n_per_tier=64",
    f"--config.train.steps={STEPS}",
    "--config.train.questions_per_step=2",
    "--config.rollout.n=2",
    "--config.rollout.max_new_tokens=8",
    "--config.mesh.data=1",
    "--config.mesh.fsdp=1",
    "--config.mesh.tensor=-1",
    "--config.checkpoint.every=1",
    "--config.checkpoint.keep=2",
    "--config.log.progress=False",
]
# the composed recipe, built and trained in Python, in a process of its own
TRAIN_VALUE = """
import sys
from upt_jax.cli import load_config
from upt_jax.train.trainer import Trainer
from tests.train.test_recipe_values import composed_recipe
t = Trainer(load_config(sys.argv[1:]), recipe=composed_recipe())
t.run()
t.close()
"""


def _child(log_path, argv):
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
        JAX_PLATFORMS="cpu",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        PYTHONHASHSEED="0",
    )
    log = open(log_path, "w")
    return subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log


def _finish(proc, log, log_path):
    rc = proc.wait(WAIT_S)
    log.close()
    assert rc == 0, Path(log_path).read_text()[-4000:]


def _committed(run):
    d = run / "checkpoints"
    return sorted(int(p) for p in os.listdir(d) if p.isdigit()) if d.is_dir() else []


@pytest.mark.slow
def test_composed_recipe_killed_then_resumed_by_upt_train_is_bitwise(tmp_path):
    """Issue #19's acceptance test: train the composed recipe with ``Trainer`` in a process, SIGKILL it
    after a checkpoint, resume with ``upt train`` (a new process, the recipe rebuilt from the run
    directory); the final parameters equal an uninterrupted run's, bitwise."""
    ref, crash = tmp_path / "ref", tmp_path / "crash"
    ref_proc, ref_log = _child(tmp_path / "ref.log", ["-c", TRAIN_VALUE, *ARGV, f"--config.run_dir={ref}"])
    proc, log = _child(tmp_path / "crash.log", ["-c", TRAIN_VALUE, *ARGV, f"--config.run_dir={crash}"])
    deadline = time.monotonic() + WAIT_S
    while not _committed(crash):
        assert proc.poll() is None, (tmp_path / "crash.log").read_text()[-4000:]
        assert time.monotonic() < deadline, "no checkpoint was committed in time"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(WAIT_S) == -signal.SIGKILL
    log.close()
    assert _committed(crash)[-1] < STEPS  # killed mid-run
    resume_argv = ["-m", "upt_jax.cli", "train", *ARGV, f"--config.run_dir={crash}", f"--config.recipe.name={NAME}"]
    _finish(*_child(tmp_path / "resume.log", resume_argv), tmp_path / "resume.log")
    _finish(ref_proc, ref_log, tmp_path / "ref.log")
    assert "resumed" in (tmp_path / "resume.log").read_text()
    _assert_bitwise_equal(_params(ref), _params(crash))  # the model of test_crash's command line
    metrics = [json.loads(line) for line in (crash / "metrics.jsonl").read_text().splitlines()]
    want = [json.loads(line) for line in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    assert [m["loss"] for m in metrics] == [m["loss"] for m in want]
    assert all(m["grad_norm"] > 0 and m["skipped"] == 0 for m in want)  # the parameters moved every step
