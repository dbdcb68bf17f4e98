"""`upt eval` on a tiny HF directory and on a tiny run directory writes results.json,
results.md and passk.png; a run directory's checkpoint params (not a fresh init) are used."""

import json
import os

import jax
import numpy as np
import pytest

from tests.eval.conftest import TINY, tiny_config
from upt_jax import cli

ARGS = ["--tiers", "add_2", "sub_3", "--k", "2", "--n-per-tier", "3", "--max-new-tokens", "8", "--no-progress"]


def _check_outputs(out, k=2, suites=("add_2", "sub_3")):
    assert sorted(os.listdir(out)) == ["completions.jsonl", "passk.png", "results.json", "results.md"]
    with open(os.path.join(out, "results.json")) as f:
        data = json.load(f)
    assert list(data["results"]) == list(suites)
    for r in data["results"].values():
        assert r["k"] == k and r["num_questions"] == 3 and 0.0 <= r["avg_at_k"] <= 1.0
        assert sum(r["reasons"].values()) == 3 * k
    assert data["summary"]["avg@k"] == {s: data["results"][s]["avg_at_k"] for s in suites}
    md = open(os.path.join(out, "results.md")).read()
    assert f"## avg@{k} (%)" in md and "| method | add_2 | sub_3 | ID avg | OOD avg |" in md
    with open(os.path.join(out, "passk.png"), "rb") as f:
        assert f.read(4) == b"\x89PNG"
    return data


def test_eval_hf_dir(tmp_path, tok, tiny_model):
    from upt_jax.models import save_hf_checkpoint

    hf = tmp_path / "hf"
    save_hf_checkpoint(tiny_model, hf)
    tok.hf.save_pretrained(hf)
    out = tmp_path / "out"
    assert cli.main(["eval", "--hf-dir", str(hf), *ARGS, "--out", str(out)]) == 0
    data = _check_outputs(out)
    assert data["source"] == {"hf_dir": str(hf)} and data["name"] == "hf"
    assert data["settings"]["template"] == "zero" and data["settings"]["tiers"] == ["add_2", "sub_3"]


def _make_run_dir(run_dir, tok):
    """A run directory as the trainer leaves it: config.json and checkpoints of steps 1 and 3,
    whose params are two different random inits (neither the seed-0 init build_model makes)."""
    from flax import nnx

    from upt_jax.models import init_model
    from upt_jax.train.checkpoint import Checkpointer
    from upt_jax.train.config import base_config
    from upt_jax.train.state import create_train_state, make_optimizer

    config = base_config()
    config.run_dir = str(run_dir)
    config.name = "tiny-run"
    config.model.overrides = dict(TINY)
    config.data.template = "plain"
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    saved = {}
    with Checkpointer(os.path.join(run_dir, "checkpoints"), async_save=False) as ckpt:
        for step, seed in ((1, 11), (3, 13)):
            model = init_model(tiny_config(tok), seed)
            _, state, _ = create_train_state(model, make_optimizer(1e-3))
            ckpt.save(step, state, {"step": step}, force=True)
            saved[step] = [np.asarray(x) for x in jax.tree.leaves(nnx.state(model))]
    return saved


def test_eval_run_dir(tmp_path, tok):
    from flax import nnx

    from upt_jax.train.run_model import load_run_model

    run = tmp_path / "run"
    saved = _make_run_dir(run, tok)
    for step, expect in ((None, 3), (1, 1)):
        model, t, config, got = load_run_model(run, step=step)
        assert got == expect and config.name == "tiny-run" and t.vocab_size == tok.vocab_size
        leaves = [np.asarray(x) for x in jax.tree.leaves(nnx.state(model))]
        assert len(leaves) == len(saved[expect])
        for a, b in zip(leaves, saved[expect]):
            np.testing.assert_array_equal(a, b)
    assert cli.main(["eval", "--run-dir", str(run), *ARGS]) == 0  # default --out: <run>/eval
    data = _check_outputs(run / "eval")
    assert data["source"]["step"] == 3 and data["source"]["experiment"] == "tiny-run"
    assert data["settings"]["template"] == "plain"  # the run's own template
    assert data["name"] == "run"


def test_eval_argument_errors(tmp_path):
    with pytest.raises(SystemExit):  # --run-dir or --hf-dir is required
        cli.main(["eval", "--tiers", "add_2"])
    with pytest.raises(SystemExit):
        cli.main(["eval", "--run-dir", "a", "--hf-dir", "b"])
    with pytest.raises(FileNotFoundError):
        cli.main(["eval", "--run-dir", str(tmp_path)])
    from upt_jax.data import synthetic
    from upt_jax.eval.inputs import parse_tiers

    assert parse_tiers(["add_2,ood", "add_2"]) == ("add_2",) + synthetic.OOD_TIERS
    with pytest.raises(SystemExit):
        parse_tiers(["add_99"])
