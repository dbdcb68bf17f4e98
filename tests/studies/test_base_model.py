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
    monkeypatch.setattr(pretrain_hint, "measure", lambda run_dir, family=None, **kw: rates)
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
    # the rule's 64-question evaluation ended short, but the protocol's measurement meets its target:
    # not a problem; short there too: a problem naming the tier
    rule = StopCriterion(tiers=("hadd_2",), target=0.45)
    assert not any("stopping rule" in p for p in pretrain_hint.check(c.run_dir, str(tmp_path / "base"), criterion=rule))
    rule = StopCriterion(tiers=("hadd_2",), target=0.85)
    got = pretrain_hint.check(c.run_dir, str(tmp_path / "base"), criterion=rule)
    assert "without meeting its stopping rule" in got[-1] and "by the protocol too, on hadd_2" in got[-1]


def test_held_out_tiers_pass_within_the_seeds_spread_and_only_they():
    """A held-out tier's rate passes within the tolerance of the range the record keeps over seeds
    (the shipped run's and its recorded rebuilds'); a trained tier's does not, and a rate outside
    the widened range fails. `record_rebuild` keeps a seed's rates and refuses the shipped seed."""
    from upt_jax.studies import base_model as bm

    record = {"seed": 1, "measured": {"cd_3": {"greedy": 0.86}, "cd_4": {"greedy": 0.23, "pass@64": 0.6}}}
    record["rebuilds"] = {"2": {"measured": {"cd_3": {"greedy": 0.84}, "cd_4": {"greedy": 0.09, "pass@64": 0.3}}}}
    assert bm.seed_range(record, "cd_4", "greedy") == (0.09, 0.23)
    got = {"cd_3": {"greedy": 0.86}, "cd_4": {"greedy": 0.12, "pass@64": 0.64}}
    assert bm.compare_to_record(got, record, spread_tiers=("cd_4",)) == []
    assert len(bm.compare_to_record(got, record)) == 1  # without the spread: cd_4 greedy is 0.11 off
    lines = bm.spread_passes(got, record, spread_tiers=("cd_4",))
    assert len(lines) == 1 and "cd_4 greedy" in lines[0] and "[0.090, 0.230]" in lines[0] and "2 seeds" in lines[0]
    # outside the range by more than the tolerance: a problem, spread or not
    low = {"cd_3": {"greedy": 0.86}, "cd_4": {"greedy": 0.03, "pass@64": 0.6}}
    assert ["cd_4 greedy" in p for p in bm.compare_to_record(low, record, spread_tiers=("cd_4",))] == [True]
    # a trained tier is held to the record itself, whatever the seeds did
    off = {"cd_3": {"greedy": 0.78}, "cd_4": {"greedy": 0.23, "pass@64": 0.6}}
    assert ["cd_3 greedy" in p for p in bm.compare_to_record(off, record, spread_tiers=("cd_4",))] == [True]


def test_check_records_a_matching_rebuild_and_then_judges_by_its_spread(tmp_path, monkeypatch):
    """``--check --record``: a converged rebuild of the same corpus whose trained tiers match is kept in
    the record's ``rebuilds`` (the weights and checksum untouched); a later check of a held-out tier
    then passes within the tolerance of the range the seeds span. A rebuild whose trained tier is off
    is not recorded. The measurement is stubbed (the protocol's samples are not what is tested)."""
    from upt_jax.data import tasks

    held_out = tasks.get_task("arith_hint").tiers_at("ood")[0]
    c = _tiny_run(tmp_path)
    base = str(tmp_path / "base")
    rates = {"hadd_2": {"greedy": 1.0}, held_out: {"greedy": 0.5}}
    monkeypatch.setattr(pretrain_hint, "measure", lambda run_dir, family=None, **kw: rates)
    shipped = pretrain_hint.ship(c.run_dir, base)
    sha = shipped["weights_sha256"]
    (tmp_path / "run" / "pretrain_history.json").write_text(json.dumps({"step": 2, "converged": True}))
    run = json.loads((tmp_path / "run" / "config.json").read_text())
    run["seed"] = 7
    (tmp_path / "run" / "config.json").write_text(json.dumps(run))
    rates.update({held_out: {"greedy": 0.3}, "hadd_2": {"greedy": 0.8}})  # a trained tier off: not recorded
    assert len(pretrain_hint.check(c.run_dir, base, record_it=True)) == 2
    assert "rebuilds" not in json.loads((tmp_path / "base" / "record.json").read_text())
    (tmp_path / "run" / "measured.json").unlink()  # else read back: the run's step is the same
    rates["hadd_2"] = {"greedy": 1.0}  # now only the held-out tier differs: recorded
    assert ["greedy" in p for p in pretrain_hint.check(c.run_dir, base, record_it=True)] == [True]
    record = json.loads((tmp_path / "base" / "record.json").read_text())
    assert record["rebuilds"]["7"]["measured"] == rates and record["weights_sha256"] == sha
    kept = json.loads((tmp_path / "run" / "measured.json").read_text())
    assert kept["measured"] == rates and kept["step"] == 2
    # kept for the run's step: a second check reads it back instead of measuring
    monkeypatch.setattr(pretrain_hint, "measure", lambda run_dir, family=None, **kw: pytest.fail("measured again"))
    assert pretrain_hint.check(c.run_dir, base) == []  # the recorded rebuild itself: within the spread
    monkeypatch.setattr(pretrain_hint, "measure", lambda run_dir, family=None, **kw: rates)
    (tmp_path / "run" / "measured.json").unlink()
    rates[held_out] = {"greedy": 0.36}  # between the two seeds' 0.3 and 0.5: passes
    assert pretrain_hint.check(c.run_dir, base) == []
    (tmp_path / "run" / "measured.json").unlink()
    rates[held_out] = {"greedy": 0.2}
    assert len(pretrain_hint.check(c.run_dir, base)) == 1


def test_check_reports_extrapolation_tiers_without_judging_them(tmp_path, monkeypatch, capsys):
    """A family's ``ext`` tiers (held out beyond the trained depth: ``cd_4``) are measured and
    printed against the record and its seeds' range, but a rebuild is not failed on them; an
    ``ood`` tier at the trained depth (``cd_3r``) is judged as a trained tier is."""
    c = _tiny_run(tmp_path)
    base = str(tmp_path / "base")
    rates = {"cd_2": {"greedy": 1.0}, "cd_3r": {"greedy": 0.6}, "cd_4": {"greedy": 0.2, "pass@64": 0.5}}
    monkeypatch.setattr(pretrain_hint, "measure", lambda run_dir, family=None, **kw: json.loads(json.dumps(rates)))
    pretrain_hint.ship(c.run_dir, base, family="countdown")
    (tmp_path / "run" / "pretrain_history.json").write_text(json.dumps({"step": 2, "converged": True}))
    rates["cd_4"] = {"greedy": 0.5, "pass@64": 0.1}
    assert pretrain_hint.check(c.run_dir, base, family="countdown") == []
    out = capsys.readouterr().out
    assert "reported, not judged (ext): cd_4 greedy: measured 0.500, record 0.200" in out
    assert "cd_4 pass@64: measured 0.100, record 0.500" in out
    (tmp_path / "run" / "measured.json").unlink()
    rates["cd_3r"] = {"greedy": 0.5}
    assert [p.split(":")[0] for p in pretrain_hint.check(c.run_dir, base, family="countdown")] == ["cd_3r greedy"]


def test_remeasure_rewrites_the_record_under_the_current_protocol(tmp_path, monkeypatch):
    """``--remeasure`` measures the shipped base under `PROTOCOL` and replaces the record's rates and
    protocol, keeping the old ones as ``previous``; rebuilds measured under another protocol are
    dropped; the weights and checksum stay. A check then measures a run under the record's protocol."""
    from upt_jax.studies import base_model as bm

    c = _tiny_run(tmp_path)
    base = str(tmp_path / "base")
    seen = []

    def fake(run_dir, family=None, protocol=None, **kw):
        seen.append(protocol)
        return {"hadd_2": {"greedy": 0.9 if protocol is None else 1.0}}

    monkeypatch.setattr(pretrain_hint, "measure", fake)
    sha = pretrain_hint.ship(c.run_dir, base)["weights_sha256"]
    path = tmp_path / "base" / "record.json"
    old = json.loads(path.read_text())
    old["protocol"] = {**old["protocol"], "n_pass": 32}
    old["rebuilds"] = {"7": {"measured": {"hadd_2": {"greedy": 0.8}}}}
    path.write_text(json.dumps(old))
    assert pretrain_hint.main(["--remeasure"], _Experiment(base)) == 0
    record = json.loads(path.read_text())
    assert record["protocol"] == bm.PROTOCOL and record["measured"] == {"hadd_2": {"greedy": 0.9}}
    assert record["previous"]["protocol"]["n_pass"] == 32 and "rebuilds" not in record
    assert record["weights_sha256"] == sha
    (tmp_path / "run" / "pretrain_history.json").write_text(json.dumps({"step": 2, "converged": True}))
    pretrain_hint.check(c.run_dir, base)
    assert seen[-1] == bm.PROTOCOL  # the record's protocol, completed


class _Experiment:
    """A base-model experiment module's interface (`pretrain_hint.main`'s ``experiment``)."""

    __file__ = pretrain_hint.__file__
    FAMILY = "arith_hint"

    def __init__(self, base):
        self.BASE = base

    get_config = staticmethod(pretrain_hint.get_config)
    criterion = staticmethod(pretrain_hint.criterion)


def test_measure_command_passes_its_protocol_and_tiers(tmp_path, monkeypatch, capsys):
    """``--measure --protocol=... --tiers=...`` measures the named tiers (pass@64 on the held-out and
    SFT ones among them) with the protocol's entries overridden and typed; an unknown entry exits."""
    from upt_jax.studies import base_model as bm

    c = _tiny_run(tmp_path)
    seen = {}

    def fake(model, tok, tiers, *, pass_tiers=(), template="zero", protocol=None, key=None):
        seen.update(tiers=tiers, pass_tiers=pass_tiers, protocol=protocol)
        return {t: {"greedy": 0.5} for t in tiers}

    monkeypatch.setattr(bm, "measure_tiers", fake)
    assert (
        pretrain_hint.main([c.run_dir, "--measure", "--protocol=n_pass=256,temperature=0.7", "--tiers=hadd_2,hadd_4"])
        == 0
    )
    assert seen == {
        "tiers": ["hadd_2", "hadd_4"],
        "pass_tiers": ["hadd_4"],
        "protocol": {"n_pass": 256, "temperature": 0.7},
    }
    assert json.loads(capsys.readouterr().out) == {"hadd_2": {"greedy": 0.5}, "hadd_4": {"greedy": 0.5}}
    with pytest.raises(SystemExit, match="n_questions"):
        pretrain_hint.main([c.run_dir, "--measure", "--protocol=n_questions=3"])


def test_shipped_bases_match_their_checksums_and_record_every_tier():
    from upt_jax import bases
    from upt_jax.data import tasks
    from upt_jax.studies import base_model as bm

    assert {"arith_hint", "countdown"} <= set(bases.names())  # one per built-in testbed family
    for name in bases.names():
        d = bases.base_dir(name)  # verifies the SHA-256
        record = bases.base_record(name)
        family = tasks.get_task(record["family"])
        assert set(record["measured"]) == {t.name for t in family.tiers}
        assert record["protocol"] == bm.PROTOCOL  # a check measures under the record's protocol
        for tier in family.tiers_at("sft", "ood", "ext"):
            assert f"pass@{record['protocol']['pass_k']}" in record["measured"][tier]
        assert record["step"] > 0 and set(os.listdir(d)) >= {"model.json", "model.safetensors", "record.json"}
        for seed, rebuild in record.get("rebuilds", {}).items():  # rebuilds measured on every tier too
            assert seed != str(record["seed"]) and set(rebuild["measured"]) == set(record["measured"])


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
