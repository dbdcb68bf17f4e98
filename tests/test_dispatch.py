"""`upt_jax.dispatch.train` runs a config of any mode (`upt train` calls it); the modes that launch
several runs (STaR, a comparison) are dispatched there, above the regimes, which import
`upt_jax.train.trainer.train` for their own runs (issue #19: no import cycle). Everything that
trains is stubbed: these check the routing only."""

import json

import ml_collections
import pytest

from upt_jax import cli, dispatch
from upt_jax.studies import comparison
from upt_jax.train import pipeline, star, trainer


@pytest.fixture
def routed(monkeypatch):
    """Which runner each call reached: ``[(runner, run_dir)]``."""
    seen = []
    monkeypatch.setattr(trainer, "train", lambda c: seen.append(("trainer", c.run_dir)) or [{"step": 1}])
    monkeypatch.setattr(star, "run_star", lambda c: seen.append(("star", c.run_dir)) or [{"round": 1}])
    monkeypatch.setattr(
        comparison, "run_comparison", lambda c, run=None: seen.append(("comparison", c.run_dir, run)) or {}
    )
    return seen


@pytest.mark.parametrize(
    "mode, runner, history",
    [
        ("online", "trainer", [{"step": 1}]),
        ("offline", "trainer", [{"step": 1}]),
        ("reward_model", "trainer", [{"step": 1}]),
        ("prm", "trainer", [{"step": 1}]),
        ("star", "star", [{"round": 1}]),
        ("comparison", "comparison", []),
    ],
)
def test_every_mode_reaches_its_runner(routed, mode, runner, history):
    config = ml_collections.ConfigDict(dict(mode=mode, run_dir=f"runs/{mode}"))
    assert dispatch.train(config) == history
    # the comparison is given the dispatcher to run its arms (an arm may be STaR)
    assert routed == [(runner, f"runs/{mode}") + ((dispatch.train,) if mode == "comparison" else ())]


@pytest.mark.parametrize("mode", trainer.MULTI_RUN_MODES)
def test_one_run_refuses_a_mode_of_several_runs_and_names_the_dispatcher(mode):
    config = ml_collections.ConfigDict(dict(mode=mode, run_dir="runs/x"))
    with pytest.raises(ValueError, match=rf"config\.mode='{mode}' launches several runs: .*upt_jax\.dispatch\.train"):
        trainer.train(config)


def test_upt_train_dispatches_star_and_the_comparison(routed, tmp_path, capsys):
    assert cli.main(["train", "--config", "star", f"--config.run_dir={tmp_path / 'star'}"]) == 0
    assert cli.main(["train", "--config", "paper_table", f"--config.run_dir={tmp_path / 'table'}"]) == 0
    assert cli.main(["train", "--config", "sft", f"--config.run_dir={tmp_path / 'sft'}"]) == 0
    assert routed == [
        ("star", str(tmp_path / "star")),
        ("comparison", str(tmp_path / "table"), dispatch.train),
        ("trainer", str(tmp_path / "sft")),
    ]
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["last"] == {"step": 1}


def test_a_pipeline_runs_its_stages_with_the_runner_it_is_given(routed, tmp_path, monkeypatch):
    """`run_pipeline` runs a stage with one training run unless given a runner; `upt pipeline`
    gives it the dispatcher, so a stage may be of any mode (STaR after SFT)."""

    def config(modes):
        c = ml_collections.ConfigDict(dict(run_dir=str(tmp_path / "-".join(modes)), order=modes))
        for name in modes:  # the stubbed runs write nothing: the directories DONE.json goes to
            (tmp_path / "-".join(modes) / name).mkdir(parents=True)
            c[name] = ml_collections.ConfigDict(
                dict(
                    mode=name if name == "star" else "offline",
                    model=dict(init="preset", checkpoint=""),
                    train=dict(steps=1),
                )
            )
        return c

    monkeypatch.setattr("upt_jax.train.schema.validate", lambda *a, **k: None)
    pipeline.run_pipeline(config(("sft", "star")), run=dispatch.train)
    d = tmp_path / "sft-star"
    assert routed == [("trainer", str(d / "sft")), ("star", str(d / "star"))]
    routed.clear()
    pipeline.run_pipeline(config(("sft", "rl")))  # the default: one training run per stage
    assert routed == [("trainer", str(tmp_path / "sft-rl" / "sft")), ("trainer", str(tmp_path / "sft-rl" / "rl"))]

    given = []
    monkeypatch.setattr(pipeline, "run_pipeline", lambda c, run=None: given.append(run) or [])
    assert cli.main(["pipeline", "--config", "sft_then_grpo", f"--config.run_dir={tmp_path / 'p'}"]) == 0
    assert given == [dispatch.train]


def test_a_comparison_runs_its_arms_and_base_with_the_runner_it_is_given(routed, tmp_path):
    """`run_arm` / `ensure_base` run a config with one training run unless given a runner (the
    dispatcher, or the learning study's STaR rounds); a pipeline arm hands it to its stages."""
    from experiments import paper_table

    c = paper_table.get_config("demo")
    c.run_dir, c.base.run_dir = str(tmp_path / "cmp"), str(tmp_path / "base")
    given = []
    runner = lambda config: given.append(config.run_dir) or []  # noqa: E731
    assert comparison.ensure_base(c, runner) == c.base.run_dir
    assert comparison.run_arm(c, "grpo", 0, runner) == [str(tmp_path / "cmp" / "grpo" / "seed0")]
    (tmp_path / "cmp" / "sft_then_grpo" / "seed0" / "sft").mkdir(parents=True)  # DONE.json's directories
    (tmp_path / "cmp" / "sft_then_grpo" / "seed0" / "grpo").mkdir(parents=True)
    comparison.run_arm(c, "sft_then_grpo", 0, runner)
    assert (
        given
        == [c.base.run_dir]
        + [
            str(tmp_path / "cmp" / a / "seed0" / s)
            for a, s in (("grpo", ""), ("sft_then_grpo", "sft"), ("sft_then_grpo", "grpo"))
        ]
        and routed == []
    )
    comparison.run_arm(c, "grpo", 1)  # the default: one training run
    assert routed == [("trainer", str(tmp_path / "cmp" / "grpo" / "seed1"))]
