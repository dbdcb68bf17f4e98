"""The demo runs end to end (export → reload → sample) and reports what it measured."""

import json
import os

from upt_jax import cli


def test_demo_end_to_end(tmp_path):
    summary = cli.demo(str(tmp_path), seed=0, max_new_tokens=8)
    assert summary["max_abs_logit_diff"] == 0.0
    assert summary["recompiled"] is False
    assert summary["tokens_per_s"] > 0
    assert os.path.exists(os.path.join(tmp_path, "hf_checkpoint", "model.safetensors"))
    with open(tmp_path / "demo.json") as f:
        assert json.load(f)["params"] == summary["params"]


def test_make_demo_is_the_testbed_demo_and_names_the_arms_that_beat_the_base(tmp_path, monkeypatch, capsys):
    """`upt demo` (`make demo`) runs experiments/testbed.py:demo from the shipped base and ends with
    one sentence naming the arms that beat the base by more than 2 SE (the comparison itself is
    tests/studies/test_testbed.py's)."""
    from upt_jax import bases
    from upt_jax.studies import comparison

    entry = lambda d, se: {"base": 0.5, "arm": 0.5 + d, "diff": d, "se": se, "seeds": ["0"]}  # noqa: E731
    seen = []
    monkeypatch.setattr(
        comparison,
        "run_comparison",
        lambda c: (
            seen.append(c)
            or {
                "paired": {
                    "vs_base": {
                        "grpo": {"hmul_2x1": entry(0.12, 0.03)},
                        "grpo_sft_control": {"hmul_2x1": entry(0.13, 0.03)},
                        "sft": {"hadd_4": entry(0.01, 0.01)},
                    }
                }
            }
        ),
    )
    cli.comparison_demo(str(tmp_path / "demo"))
    (c,) = seen
    assert c.name == "testbed_demo" and c.run_dir == str(tmp_path / "demo")
    assert c.base.run_dir == bases.base_dir("arith_hint") and {"grpo", "sft"} <= set(c.arms)
    out = capsys.readouterr().out
    # the SFT control the comparison adds to GRPO is named too (the demo once crashed here)
    assert (
        "Beat the base model by more than 2 standard errors on some tier: GRPO (hmul_2x1); "
        "SFT control (GRPO's questions) (hmul_2x1)."
    ) in out
    assert os.path.join(str(tmp_path / "demo"), "summary.json") in out


# ----------------------------------------------------------------------------- config loading (issue #18)
import importlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

from tests.test_experiments import COVERED_ELSEWHERE, RUN_HERE  # noqa: E402
from upt_jax.train.schema import ConfigError  # noqa: E402
from upt_jax.train.trainer import get_recipe  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _upt(args, cwd, timeout=300):
    """``python -m upt_jax.cli ARGS`` in ``cwd``, seeing this checkout."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "upt_jax.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_load_config_reads_its_overrides_from_argv_not_sys_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest", "--config.train.steps=99"])
    c = cli.load_config(["--config", "experiments/grpo.py", "--config.train.steps=3", "--config.rollout.n=2"])
    assert (c.train.steps, c.rollout.n) == (3, 2)


def test_recipe_hparams_from_the_command_line_reach_the_recipe():
    """#18.3: GRPO's β and clip, HPT's offline signal and distillation's top_k from the CLI."""
    c = cli.load_config(
        ["--config", "grpo", "--config.recipe.hparams.kl_coef=0.04", "--config.recipe.hparams.eps", "0.1"]
    )
    assert c.recipe.hparams.to_dict() == {"kl_coef": 0.04, "eps": 0.1}
    (term,) = get_recipe(c).terms
    assert term.kl.coef == 0.04 and term.rollout.stabiliser[0].kw["eps_low"] == 0.1
    c = cli.load_config(["--config", "experiments/hpt.py", "--config.recipe.hparams.offline=rl"])
    assert get_recipe(c).name == "hpt_offline_rl"
    c = cli.load_config(["--config", "distill", "--config.recipe.hparams.top_k=64"])
    assert c.recipe.hparams.top_k == 64 and isinstance(c.recipe.hparams.top_k, int)
    c = cli.load_config(["--config", "ppo", "--config.recipe.hparams.kl_coef=0.05"])  # ppo.py's own docstring
    assert get_recipe(c).terms[0].kl.coef == 0.05 and c.recipe.hparams.gamma == 1.0
    # typed by the recipe named after every other override, whatever their order
    c = cli.load_config(
        ["--config", "grpo", "--config.recipe.hparams.baseline=false", "--config.recipe.name=reinforce_pp"]
    )
    assert c.recipe.hparams.baseline is False and get_recipe(c).name == "reinforce_pp"
    c = cli.load_config(["--config", "grpo:dr_grpo", "--config.recipe.hparams.max_len=None"])
    assert c.recipe.hparams.max_len is None
    c = cli.load_config(["--config", "sft_then_grpo", "--config.grpo.recipe.hparams.kl_coef=0.02"])
    assert get_recipe(c.grpo).terms[0].kl.coef == 0.02
    c = cli.load_config(
        ["--config", "grpo", "--config.model.overrides.hidden_size=64", "--config.data.fields.chosen=pos"]
    )
    assert c.model.overrides.to_dict() == {"num_layers": 2, "hidden_size": 64} and c.data.fields.chosen == "pos"


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--config.recipe.hparams.kl_coeff=0.04"],
            r"config\.recipe\.hparams\.kl_coeff: recipe 'grpo' has no key "
            r"'kl_coeff'; its keys: eps, kl_coef, kl_kind, std_eps",
        ),
        (["--config.recipe.hparams.kl_coef=lots"], r"config\.recipe\.hparams\.kl_coef='lots': must be a finite float"),
        (["--config.recipe.hparams.kl_coef=-1"], r"config\.recipe\.hparams\.kl_coef=-1\.0: must be a finite float ≥ 0"),
        (["--config.model.overrides.hidden=64"], r"config\.model\.overrides has no key 'hidden'"),
    ],
)
def test_bad_recipe_hparam_overrides_name_the_key(args, message):
    with pytest.raises(ConfigError, match=message):
        cli.load_config(["--config", "grpo", *args])


@pytest.mark.parametrize("spec", sorted(set(COVERED_ELSEWHERE) | set(RUN_HERE) | {"grpo:dapo", "dpo:simpo"}))
def test_loading_an_experiment_changes_nothing_it_builds(spec):
    """Without overrides the command line gives the module's own config (no hyper-parameter filled
    in), so every experiment's recipe is the one it built before."""
    name, _, arg = spec.partition(":")
    direct = importlib.import_module(f"experiments.{name}").get_config(arg or None)
    loaded = cli.load_config(["--config", spec])
    assert loaded.to_dict() == direct.to_dict()
    if "recipe" in direct:
        assert get_recipe(loaded) == get_recipe(direct)


def test_config_names_resolve_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = cli.shipped_experiments_dir()
    assert cli.resolve_config_file("grpo") == os.path.join(shipped, "grpo.py")
    assert cli.resolve_config_file("hpt:released_code") == os.path.join(shipped, "hpt.py") + ":released_code"
    assert cli.resolve_config_file("experiments/grpo.py:dapo") == os.path.join(shipped, "grpo.py") + ":dapo"
    assert cli.load_config(["--config", "hpt:released_code"]).recipe.hparams.variant == "released_code"
    # a file in the working directory wins (by path)
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "grpo.py").write_text(
        "from upt_jax.train.config import base_config\n\n\ndef get_config(arg=None):\n"
        "    c = base_config()\n    c.name = 'local'\n    return c\n"
    )
    assert cli.load_config(["--config", "experiments/grpo.py"]).name == "local"
    assert cli.load_config(["--config", "grpo"]).name == "grpo"
    with pytest.raises(SystemExit, match=r"'nope\.py' is not a file .* nor a shipped experiment \(.*grpo"):
        cli.load_config(["--config", "nope.py"])


def test_train_help_lists_every_key_with_its_default(tmp_path):
    """#18.4: `upt train --config grpo --help` from another directory lists the recipe's
    hyper-parameters with their defaults; `upt train --help` and `upt pipeline --help` too."""
    r = _upt(["train", "--config", "grpo", "--help"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "recipe.hparams.kl_coef=0.0  float: a finite float ≥ 0" in r.stdout
    assert "train.max_grad_norm=1.0  float | None: a finite float > 0, or None (no clipping)" in r.stdout
    assert "recipe.hparams.shaping_gamma" not in r.stdout  # only grpo's
    r = _upt(["train", "--config", "hpt:released_code", "--config.rollout.n=4", "-h"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "rollout.n=4" in r.stdout and "recipe.hparams.gamma=0.0" in r.stdout
    for args in (["train", "--help"], ["pipeline", "--help"], ["pipeline", "--config", "sft_then_grpo", "--help"]):
        r = _upt(args, cwd=tmp_path)
        assert r.returncode == 0, (args, r.stderr)
        assert "recipe.hparams.kl_coef=0.0" in r.stdout, args
    assert "== stage grpo (--config.grpo.KEY=VALUE)" in r.stdout


def test_out_of_domain_override_exits_with_the_key(tmp_path):
    r = _upt(
        ["train", "--config", "grpo", "--config.train.max_grad_norm=-1", f"--config.run_dir={tmp_path / 'run'}"],
        cwd=tmp_path,
    )
    assert r.returncode == 2
    assert "upt train: config.train.max_grad_norm=-1.0: must be a finite float > 0, or None" in r.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
