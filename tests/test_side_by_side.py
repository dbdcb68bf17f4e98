"""docs/side_by_side.md: every upt_jax block works in this repository.

Each ``upt`` command is parsed as the command line parses it (``upt train``: the config with its
overrides, validated by the schema; ``upt eval``: its argument parser; ``upt export``: the real
command with the export itself stubbed); the Python blocks run (the reward function is called, the
custom-loss recipe is built, checked against its config and differentiated on a random batch)."""

import pathlib
import re
import shlex

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from upt_jax import cli, upge
from upt_jax.eval_cli import build_parser
from upt_jax.train import schema

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "side_by_side.md"
MODEL = "/models/Qwen2.5-0.5B-Instruct"


def upt_jax_blocks() -> list[tuple[str, str]]:
    """``(language, code)`` of the fenced blocks whose nearest preceding side marker is **upt_jax**."""
    out, side = [], None
    for part in re.split(r"(```\w*\n.*?```)", DOC.read_text(), flags=re.S):
        if part.startswith("```"):
            lang, _, body = part[3:-3].partition("\n")
            if side == "upt_jax":
                out.append((lang, body))
            continue
        markers = re.findall(r"\*\*(upt_jax|TRL|Tunix)\*\*", part)
        side = markers[-1] if markers else side
    return out


def commands(body: str) -> list[list[str]]:
    lines = body.replace("\\\n", " ").splitlines()
    argvs = [shlex.split(line.replace("$MODEL", MODEL), comments=True) for line in lines]
    return [a for a in argvs if a]  # comment lines hold none


def test_the_doc_has_the_five_tasks_on_three_sides():
    text = DOC.read_text()
    for task in ("SFT on chat data", "GRPO with your own reward", "Evaluation", "Export", "A custom loss"):
        section = re.search(rf"^## \d\. {task}\n(.*?)(?=^## |\Z)", text, re.M | re.S).group(1)
        assert all(f"**{side}**" in section for side in ("upt_jax", "TRL", "Tunix")), task
    langs = [lang for lang, _ in upt_jax_blocks()]
    assert langs.count("bash") == 4 and langs.count("python") == 2


def test_every_upt_command_parses(tmp_path, monkeypatch):
    import upt_jax.train.export as export

    exported = []
    monkeypatch.setattr(
        export, "export_run", lambda run_dir, out_dir, **kw: (exported.append((run_dir, out_dir, kw)), tmp_path)[1]
    )
    seen = set()
    for lang, body in upt_jax_blocks():
        if lang != "bash":
            continue
        for argv in commands(body):
            assert argv[0] == "upt", argv
            seen.add(argv[1])
            if argv[1] == "train":
                config = cli.load_config(argv[2:])  # every --config. key and value through the schema
                schema.validate(config)
                assert not [a for a in argv[2:] if a.startswith("--") and not a.startswith("--config")]
            elif argv[1] == "eval":
                build_parser().parse_args(argv[2:])
            elif argv[1] == "export":
                assert cli.main(argv[1:]) == 0
            else:
                pytest.fail(f"unexpected command {argv}")
    assert seen == {"train", "eval", "export"} and exported == [
        ("runs/grpo", "exports/grpo", dict(step=None, dtype=None, merge_lora=False))
    ]
    grpo = cli.load_config(commands(upt_jax_blocks()[2][1])[0][2:])
    assert grpo.reward.functions == ("math", "my_rewards:length_penalty") and grpo.reward.weights == (1.0, 0.1)


def test_the_python_blocks_run(tmp_path, monkeypatch):
    from tests.upge.batches import random_batch
    import upt_jax.train.trainer as trainer
    from upt_jax.train.checks import validate

    monkeypatch.chdir(tmp_path)
    (reward, _), (loss, _) = [(b, lang) for lang, b in upt_jax_blocks() if lang == "python"]
    ns = {}
    exec(reward, ns)
    assert ns["length_penalty"](["q", "q"], ["abcd", ""], answer=["1", "1"]) == [-0.004, 0.0]

    ran = []

    class Trainer:  # the snippet's Trainer(config, recipe=recipe).run(): checked, not trained
        def __init__(self, config, recipe=None):
            validate(config, recipe=recipe)  # the schema, the recipe vs the config's rollouts
            self.config, self.recipe = config, recipe

        def run(self):
            ran.append((self.config, self.recipe))

    monkeypatch.setattr(trainer, "Trainer", Trainer)
    exec(loss, {})
    ((config, recipe),) = ran
    assert recipe.name == "my_grpo" and config.run_dir == "runs/my_grpo"
    assert upge.requirements(recipe).entropy
    logp, batch = random_batch(0, b=8, t=6, group_size=4)

    def objective(lp):
        sums, dens, _ = upge.compute_loss(recipe, lp, batch, group_size=4, entropy=batch["entropy"])
        return upge.normalise(sums, dens)

    g = jax.grad(objective)(logp)
    assert np.isfinite(float(objective(logp))) and float(jnp.abs(g).sum()) > 0


def readme_five_minutes() -> list[tuple[str, str]]:
    readme = DOC.parents[1] / "README.md"
    section = re.search(r"^## Your own model in five minutes\n(.*?)(?=^## )", readme.read_text(), re.M | re.S).group(1)
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w*)\n(.*?)```", section, re.S)]


def test_the_readmes_five_minutes_parse_and_run(monkeypatch):
    """README's first section: each command parses as `upt` parses it; the Python snippet runs (the
    training and the loading stubbed)."""
    import upt_jax.train.run_model as run_model
    import upt_jax.train.trainer as trainer

    (bash, cmds), (py, snippet) = readme_five_minutes()
    assert (bash, py) == ("bash", "python")
    kinds = []
    for argv in commands(cmds):
        kinds.append(argv[1])
        if argv[1] == "train":
            schema.validate(cli.load_config(argv[2:]))
        elif argv[1] == "eval":
            build_parser().parse_args(argv[2:])
        else:
            assert argv[1:] == ["export", "runs/grpo", "exports/grpo"]
    assert kinds == ["train", "train", "eval", "export"]
    trained = []
    monkeypatch.setattr(trainer, "train", lambda config: trained.append(config) or [{"step": 1}])
    monkeypatch.setattr(run_model, "load_run_model", lambda run_dir: ("model", "tok", "config", 1))
    ns = {}
    exec(snippet, ns)
    (config,) = trained
    schema.validate(config)
    assert config.reward.functions == ("my_rewards:length_penalty",) and ns["history"] == [{"step": 1}]
