"""pretrain_until: phase 1 at a constant rate until the transition (or max_steps), then a linear
cool-down (schedule=wsd) over cooldown_frac of phase 1; resumable from its history; the wsd
schedule itself; experiments/pretrain_hint.py is a valid config for it."""
import json

import numpy as np
import pytest

from experiments import pretrain_hint
from upt_jax.studies.base_model import StopCriterion, pretrain_until
from upt_jax.train.state import make_optimizer

SMALL = dict(num_layers=1, hidden_size=32, intermediate_size=64, num_heads=2, num_kv_heads=1, head_dim=16)


def test_wsd_schedule_is_constant_then_decays_linearly_to_zero():
    import optax

    tx = make_optimizer(1.0, schedule="wsd", warmup_steps=2, total_steps=10, decay_steps=4, name="sgd",
                        max_grad_norm=None)
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
    crit = StopCriterion(tiers=("hadd_2",), transition=0.99, target=0.99, cooldown_frac=0.5, patience=2,
                         eval_every=2, max_steps=4, n_eval=2, max_new_tokens=8)
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
