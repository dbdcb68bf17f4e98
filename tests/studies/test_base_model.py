"""pretrain_until: phase 1 at a constant rate until the transition (or max_steps), then a linear
cool-down (schedule=wsd) over cooldown_frac of phase 1; resumable from its history; the wsd
schedule itself; experiments/pretrain_hint.py is a valid config for it."""

import json
import os

import numpy as np
import pytest

from experiments import pretrain_hint
from upt_jax.studies.base_model import StopCriterion, pretrain_until
from upt_jax.train.state import make_optimizer

SMALL = dict(num_layers=1, hidden_size=32, intermediate_size=64, num_heads=2, num_kv_heads=1, head_dim=16)


def test_wsd_schedule_is_constant_then_decays_linearly_to_zero():
    import optax

    tx = make_optimizer(
        1.0, schedule="wsd", warmup_steps=2, total_steps=10, decay_steps=4, name="sgd", max_grad_norm=None
    )
    params = {"w": np.zeros(())}
    state = tx.init(params)
    lrs = []
    for _ in range(10):  # SGD with gradient −1: the update is the learning rate itself
        upd, state = tx.update({"w": -np.ones(())}, state, params)
        lrs.append(float(upd["w"]))
    np.testing.assert_allclose(lrs, [0, 0.5, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25], atol=1e-6)
    assert optax is not None


def test_pretrain_until_cools_down_after_phase_one_and_resumes(tmp_path):
    c = pretrain_hint.get_config()
    assert c.train.schedule == "constant" and set(c.data.corpus.tiers) == {"hadd_2", "hadd_3", "hmul_2x1"}
    assert pretrain_hint.criterion().tiers == pretrain_hint.STOP_TIERS
    c.run_dir, c.model.overrides = str(tmp_path), dict(SMALL)
    c.data.corpus.n_docs, c.train.questions_per_step, c.train.warmup_steps = 64, 8, 1
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
    crit = StopCriterion(
        tiers=("hadd_2",),
        transition=0.99,
        target=0.99,
        cooldown_frac=0.5,
        patience=2,
        eval_every=2,
        max_steps=4,
        n_eval=2,
        max_new_tokens=8,
    )
    r = pretrain_until(c, crit)
    # a random model never passes the transition: phase 1 runs to max_steps, then cools down over
    # cooldown_frac · 4 = 2 steps; it does not reach the target
    assert (r.cooldown_from, r.final_step, r.converged) == (4, 6, False)
    assert [h["step"] for h in r.history] == [2, 4, 6]
    with open(tmp_path / "pretrain_history.json") as f:
        assert json.load(f)["final_step"] == 6
    with open(tmp_path / "metrics.jsonl") as f:
        lr = [json.loads(line)["lr"] for line in f if "lr" in line]
    if lr:  # the cool-down's learning rate falls to 0 at its last step
        assert lr[-1] < lr[3] and lr[-1] == pytest.approx(c.train.learning_rate / 2)
    again = pretrain_until(c, crit)  # a rerun finds everything done
    assert again.history == r.history and again.final_step == 6


def test_constant_schedule_is_required():
    c = pretrain_hint.get_config()
    c.train.schedule = "cosine"
    with pytest.raises(ValueError, match="pretrain_until runs 'constant'"):
        pretrain_until(c, pretrain_hint.criterion())


def _tiny_run(tmp_path):
    """A 2-step hinted pre-training run (random-ish weights are all the shipping tests need)."""
    from upt_jax.train.trainer import train

    c = pretrain_hint.get_config()
    c.run_dir, c.model.overrides = str(tmp_path / "run"), dict(SMALL)
    c.data.corpus.n_docs, c.train.questions_per_step, c.train.warmup_steps, c.train.steps = 16, 8, 1, 2
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
    c.checkpoint.every = 2
    train(c)
    return c


def test_a_shipped_base_loads_like_its_run_and_refuses_damaged_weights(tmp_path):
    import jax
    from flax import nnx

    from upt_jax.studies.base_model import compare_to_record, ship_base
    from upt_jax.train import run_model
    from upt_jax.train.checkpoint import CheckpointError
    from upt_jax.train.trainer import Trainer

    c = _tiny_run(tmp_path)
    measured = {"hadd_2": {"greedy": 0.5, "n": 4}, "hadd_4": {"greedy": 0.0, "n": 4, "pass@64": 0.0}}
    out = str(tmp_path / "base")
    record = ship_base(c.run_dir, out, family="arith_hint", measured=measured, command="test")
    assert record["step"] == 2 and len(record["weights_sha256"]) == 64
    assert run_model.is_weights_dir(out) and not run_model.is_weights_dir(c.run_dir)
    run, _ = run_model.model_from_run(c.run_dir, key="k")
    shipped, step = run_model.model_from_run(out, key="k")
    assert step == 2
    for a, b in zip(jax.tree.leaves(nnx.state(run)), jax.tree.leaves(nnx.state(shipped))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bitwise
    # a later stage starts from it as from a run directory, with the recorded tokenizer/template
    c2 = pretrain_hint.get_config()
    c2.run_dir, c2.model.init, c2.model.checkpoint = str(tmp_path / "next"), "checkpoint", out
    c2.mesh.data, c2.mesh.fsdp, c2.mesh.tensor = -1, 1, 1
    t = Trainer(c2)
    try:
        for a, b in zip(jax.tree.leaves(t.state.params), jax.tree.leaves(nnx.state(run))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    finally:
        t.close()
    # the record check: within tolerance, outside it, and a tier the rebuild did not measure
    assert compare_to_record(measured, record) == []
    off = {"hadd_2": {"greedy": 0.6, "n": 4}, "hadd_4": {"greedy": 0.0, "n": 4}}
    problems = compare_to_record(off, record, tolerance=0.05)
    assert len(problems) == 2 and "hadd_2 greedy" in problems[0] and "not measured" in problems[1]
    # one flipped byte in the weights: refused, naming the checksum
    path = tmp_path / "base" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        run_model.model_from_run(out, key="k")


def test_ship_records_the_corpus_and_check_refuses_a_rebuild_of_another_corpus(tmp_path, monkeypatch):
    """``--ship`` writes the run's corpus settings (its family options included) into the record;
    ``--check`` names every corpus setting a rebuild differs in, and a run that did not meet its
    stopping rule, besides the rates (measurement
    stubbed: the protocol's thousands of samples are not what is tested)."""
    c = _tiny_run(tmp_path)
    rates = {"hadd_2": {"greedy": 0.5, "n": 4}}
    monkeypatch.setattr(pretrain_hint, "measure", lambda run_dir, family=None: rates)
    record = pretrain_hint.ship(c.run_dir, str(tmp_path / "base"))
    assert record["corpus"]["tiers"] == list(c.data.corpus.tiers) and record["corpus"]["options"] == {}
    assert pretrain_hint.check(c.run_dir, str(tmp_path / "base")) == []
    path = tmp_path / "run" / "config.json"
    run = json.loads(path.read_text())
    run["data"]["corpus"]["options"] = {"labelled_facts": 0.5}
    run["data"]["corpus"]["demo_fraction"] = 0.5
    path.write_text(json.dumps(run))
    problems = pretrain_hint.check(c.run_dir, str(tmp_path / "base"))
    assert len(problems) == 2 and "corpus demo_fraction" in problems[0] and "labelled_facts" in problems[1]
    (tmp_path / "run" / "pretrain_history.json").write_text(json.dumps({"step": 2, "converged": False}))
    assert "without meeting its stopping rule" in pretrain_hint.check(c.run_dir, str(tmp_path / "base"))[-1]


def test_shipped_bases_match_their_checksums_and_record_every_tier():
    from upt_jax import bases
    from upt_jax.data import tasks

    assert {"arith_hint", "countdown"} <= set(bases.names())  # one per built-in testbed family
    for name in bases.names():
        d = bases.base_dir(name)  # verifies the SHA-256
        record = bases.base_record(name)
        family = tasks.get_task(record["family"])
        assert set(record["measured"]) == {t.name for t in family.tiers}
        for tier in family.tiers_at("sft"):
            assert f"pass@{record['protocol']['pass_k']}" in record["measured"][tier]
        assert record["step"] > 0 and set(os.listdir(d)) >= {"model.json", "model.safetensors", "record.json"}


def test_a_shipped_base_loads_for_evaluation_like_a_run_directory():
    """`upt eval --run-dir` and the comparison's evaluation read a shipped model directory (no
    config.json, no checkpoints/): its weights, its recorded template and its record's step."""
    import jax
    import numpy as np
    from flax import nnx

    from upt_jax import bases
    from upt_jax.train.run_model import load_run_model
    from upt_jax.train import run_model

    d = bases.base_dir("arith_hint")
    model, tok, config, step = load_run_model(d)
    assert step == bases.base_record("arith_hint")["step"] and config.data.template == "zero"
    assert tok.vocab_size <= model.cfg.vocab_size and config.name == "arith_hint"
    direct, _ = run_model.model_from_run(d, key="k")
    for a, b in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(direct))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
