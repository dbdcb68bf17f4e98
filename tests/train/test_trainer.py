"""The training loop end to end: resume is bitwise, pipelines hand off and are idempotent."""

import json
import os

import jax
import numpy as np
import pytest

from experiments import grpo, hpt, sft, sft_then_grpo
from upt_jax.train.pipeline import run_pipeline
from upt_jax.train.trainer import Trainer, train

TINY = dict(num_layers=1, hidden_size=32, intermediate_size=64, num_heads=2, num_kv_heads=1, head_dim=16)


def shrink(c, run_dir, steps):
    """A config small enough for CI: 1-layer model, 2 questions × 2 rollouts of 8 tokens."""
    c.run_dir = str(run_dir)
    c.model.overrides = dict(TINY)
    c.data.tiers = ("add_2",)
    c.data.n_per_tier = 64
    c.train.steps = steps
    c.train.questions_per_step = 2
    c.rollout.n = 2
    c.rollout.max_new_tokens = 8
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 2, 1, -1  # 8 simulated devices; 4 rows split over data
    c.checkpoint.every = 1
    c.checkpoint.async_save = True
    c.log.progress = False
    return c


def _final_params(run_dir, config):
    t = Trainer(config)
    try:
        return jax.device_get(t.state.params), int(t.state.step)
    finally:
        t.close()


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_stop_and_resume_is_bitwise_identical(tmp_path):
    full = shrink(grpo.get_config(), tmp_path / "full", steps=4)
    train(full)
    half = shrink(grpo.get_config(), tmp_path / "half", steps=2)
    first = train(half)
    assert [m["step"] for m in first] == [1, 2]
    # time to the first update and the compiles (upt_jax.train.compile_stats): none after step 1
    assert first[0]["time/first_step_s"] >= first[0]["time/step_s"] > 0 and "time/first_step_s" not in first[1]
    assert first[0]["compile/count"] + first[0]["compile/cache_hits"] > 0 and first[1]["compile/count"] == 0
    half.train.steps = 4
    second = train(half)  # a new process would do the same: everything comes from the run dir
    assert [m["step"] for m in second] == [3, 4]
    a, sa = _final_params(tmp_path / "full", full)
    b, sb = _final_params(tmp_path / "half", half)
    assert sa == sb == 4
    for x, y in zip(_leaves(a), _leaves(b)):
        np.testing.assert_array_equal(x, y)
    with open(tmp_path / "half" / "metrics.jsonl") as f:
        assert [json.loads(line)["step"] for line in f] == [1, 2, 3, 4]
    # the same rollouts were drawn: identical logged rewards and losses per step
    with open(tmp_path / "full" / "metrics.jsonl") as f:
        full_log = [json.loads(line) for line in f]
    assert [m["loss"] for m in full_log[2:]] == [m["loss"] for m in second]


def test_hpt_routes_unsolved_questions_to_sft(tmp_path):
    c = shrink(hpt.get_config(), tmp_path / "hpt", steps=1)
    (m,) = train(c)
    # an untrained model solves nothing: every question goes to SFT, the RL term is empty
    assert m["pass_rate/mean"] == 0.0 and m["gate/sft_frac"] == 1.0
    assert m["denominator/rl"] == 0.0 and m["denominator/sft"] > 0
    assert m["skipped"] == 0.0 and np.isfinite(m["grad_norm"]) and m["grad_norm"] > 0


def test_sft_then_grpo_pipeline_runs_and_rerun_only_reports(tmp_path, capsys):
    c = sft_then_grpo.get_config()
    c.run_dir = str(tmp_path / "pipe")
    shrink(c.sft, "unused", steps=2)
    shrink(c.grpo, "unused", steps=1)
    reports = run_pipeline(c)
    assert [r["status"] for r in reports] == ["ran", "ran"]
    assert os.path.exists(tmp_path / "pipe" / "sft" / "DONE.json")
    grpo_cfg = c.grpo
    assert grpo_cfg.model.init == "checkpoint" and grpo_cfg.model.checkpoint == str(tmp_path / "pipe" / "sft")
    before = {p: os.path.getmtime(os.path.join(dp, p)) for dp, _, fs in os.walk(tmp_path / "pipe") for p in fs}
    again = run_pipeline(c)
    assert [r["status"] for r in again] == ["already done", "already done"]
    after = {p: os.path.getmtime(os.path.join(dp, p)) for dp, _, fs in os.walk(tmp_path / "pipe") for p in fs}
    assert before == after, "a rerun of a finished pipeline must not write anything"
    assert "already done" in capsys.readouterr().out


def test_stage_handoff_loads_previous_params(tmp_path):
    c = shrink(sft.get_config(), tmp_path / "a", steps=1)
    train(c)
    trained, _ = _final_params(None, c)
    nxt = shrink(grpo.get_config(), tmp_path / "b", steps=0)
    nxt.model.init = "checkpoint"
    nxt.model.checkpoint = str(tmp_path / "a")
    start, step = _final_params(None, nxt)
    assert step == 0  # fresh optimiser and step
    for x, y in zip(_leaves(trained), _leaves(start)):
        np.testing.assert_array_equal(x, y)


def test_config_errors_before_compute(tmp_path):
    c = shrink(grpo.get_config(), tmp_path / "bad", steps=1)
    c.mesh.data, c.mesh.fsdp = 3, 1
    with pytest.raises(ValueError, match="does not fit"):
        Trainer(c)
    c = shrink(grpo.get_config(), tmp_path / "bad2", steps=1)
    c.train.questions_per_step, c.train.microbatches = 3, 2
    with pytest.raises(ValueError, match="not divisible"):
        Trainer(c)
    c = shrink(grpo.get_config(), tmp_path / "bad3", steps=1)
    c.model.init, c.model.hf_dir = "hf", str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="hf_dir"):
        Trainer(c)


class _CoinVerifier:
    """Stands in for the verifier: deterministic 0/1 rewards alternating over rollouts (an
    untrained model earns none, and PPO's critic and RFT's gate need both kinds)."""

    def __init__(self):
        self.calls = 0

    def scores(self, outputs, golds):
        self.calls += 1
        # alternating by position: every group of ≥ 2 rollouts has both rewards, in every process
        # (not hash(): str hashes change with PYTHONHASHSEED)
        return np.asarray([(i + self.calls) % 2 for i in range(len(outputs))], np.float32)

    def metrics(self):
        return {}

    def close(self):
        pass


def test_ppo_trains_policy_and_critic(tmp_path):
    from experiments import ppo

    c = shrink(ppo.get_config(), tmp_path / "ppo", steps=2)
    c.critic.learning_rate = 1e-2
    t = Trainer(c)
    t.verifier = _CoinVerifier()
    critic0 = jax.device_get(t.critic_state.params)
    try:
        metrics = t.run()
    finally:
        t.close()
    assert all(m["critic/loss"] > 0 for m in metrics), "returns are non-zero, so the value loss is"
    assert all(np.isfinite(m["critic/explained_variance"]) and m["critic/explained_variance"] <= 1 for m in metrics)
    assert all(m["grad_norm"] > 0 and m["critic/grad_norm"] > 0 for m in metrics)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(_leaves(critic0), _leaves(t.critic_state.params)))
    assert moved > 1e-4
    assert os.path.isdir(tmp_path / "ppo" / "checkpoints_critic")


def test_dpo_raises_the_chosen_margin(tmp_path):
    from experiments import dpo

    c = shrink(dpo.get_config(), tmp_path / "dpo", steps=3)
    c.train.learning_rate = 3e-3
    c.train.questions_per_step = 4
    t = Trainer(c)
    try:
        records = next(iter(t.dataset))  # the first step's pairs (same seed as the run)
        rows, _, _ = t.batch(records, None)
        tokens, attn, mask = (jax.numpy.asarray(rows[k]) for k in ("tokens", "attention_mask", "mask"))

        def margin(params):
            lp = np.asarray(t.logp_fn(params, tokens, attn) * mask).sum(-1)
            return float(np.mean(lp[0::2] - lp[1::2]))  # chosen rows are even, rejected odd

        before = margin(t.ref_params)
        t.run()
        after = margin(t.state.params)
    finally:
        t.close()
    assert after > before + 1e-3, (before, after)


def test_dapo_dynamic_sampling_keeps_only_groups_with_signal(tmp_path):
    c = shrink(grpo.get_config("dapo"), tmp_path / "dapo", steps=1)
    assert c.train.dynamic_sampling
    c.rollout.n = 4
    c.train.dynamic_sampling_max_draws = 8
    t = Trainer(c)
    t.verifier = _CoinVerifier()
    try:
        rows, info, _ = t.batch(next(t.data_iter), jax.random.key(0))
    finally:
        t.close()
    rewards = rows["rewards"].reshape(-1, 4)
    assert rewards.shape[0] == c.train.questions_per_step
    assert info["dynamic_sampling/groups_drawn"] >= rewards.shape[0]
    if "dynamic_sampling/short" not in info:
        assert np.all(np.ptp(rewards, axis=1) > 0), rewards


def test_tensorboard_and_jsonl_metrics(tmp_path):
    from upt_jax.train.metrics_log import read_metrics

    c = shrink(sft.get_config(), tmp_path / "tb", steps=2)
    c.log.tensorboard = True
    train(c)
    rows = read_metrics(str(tmp_path / "tb"))
    assert [r["step"] for r in rows] == [1, 2]
    assert all(np.isfinite(r["nll"]) and r["nll"] > 0 for r in rows)
    events = os.listdir(tmp_path / "tb" / "tensorboard")
    assert any(e.startswith("events.out.tfevents") for e in events)
    size = sum(os.path.getsize(tmp_path / "tb" / "tensorboard" / e) for e in events)
    assert size > 200  # scalars were written, not only the header


def test_rft_trains_only_on_verified_rollouts(tmp_path):
    from experiments import rft
    from upt_jax import upge

    c = shrink(rft.get_config(), tmp_path / "rft", steps=1)
    t = Trainer(c)
    t.verifier = _CoinVerifier()
    try:
        rows, _, _ = t.batch(next(iter(t.dataset)), jax.random.key(0))
        (m,) = t.run()
    finally:
        t.close()
    rewards, mask = rows["rewards"], rows["mask"]
    dens = upge.denominators(
        t.recipe, dict(mask=jax.numpy.asarray(mask), rewards=jax.numpy.asarray(rewards)), group_size=t.group_size
    )
    # only the tokens of rollouts the verifier accepted count
    assert float(dens["sft"]) == float(mask[rewards > 0.5].sum())
    assert 0 < float(dens["sft"]) < float(mask.sum())
    assert m["grad_norm"] > 0 and m["skipped"] == 0


def test_a_nan_learning_rate_is_refused_before_anything_is_built(tmp_path):
    """`--config.train.learning_rate=nan` used to train and checkpoint all-NaN parameters (rc 0)."""
    from upt_jax.train.schema import ConfigError

    c = shrink(sft.get_config(), tmp_path, steps=4)
    c.train.learning_rate = float("nan")
    with pytest.raises(ConfigError, match="config.train.learning_rate=nan: must be a finite float > 0"):
        train(c)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("lr", [1e30, 1e3])
def test_a_diverging_run_saves_no_broken_checkpoint(tmp_path, lr):
    """`upt train --config experiments/sft.py --config.train.learning_rate=1e30 ...` used to end rc 0
    with every parameter NaN in the saved steps (a NaN rate is now refused by the config schema;
    the step's own finiteness check is tested in test_step.py). Now no diverged update is applied
    or saved: after max_nonfinite_in_a_row diverged steps the run stops with NonFiniteError, and
    every checkpoint in the run directory is finite (here none was saved, so the message says so)."""
    from upt_jax.train.checkpoint import nonfinite_reason
    from upt_jax.train.trainer import NonFiniteError

    c = shrink(sft.get_config(), tmp_path, steps=4)
    c.train.learning_rate = lr
    c.train.max_nonfinite_in_a_row = 3
    with pytest.raises(NonFiniteError, match="3 updates in a row diverged .* no checkpoint was saved"):
        train(c)
    ckpts = tmp_path / "checkpoints"
    assert not ckpts.exists() or not [p for p in os.listdir(ckpts) if p.isdigit()]
    # a run that diverges after good steps keeps its last good (finite) checkpoint
    c2 = shrink(sft.get_config(), tmp_path / "later", steps=2)
    train(c2)
    c2.train.steps, c2.train.learning_rate, c2.train.max_nonfinite_in_a_row = 6, lr, 2
    with pytest.raises(NonFiniteError, match="last good checkpoint is step 2"):
        train(c2)
    t = Trainer(c2)
    try:
        assert int(t.state.step) == 2 and nonfinite_reason(t.state) is None
    finally:
        t.close()


def test_progress_bar_shows_the_objective_reward_and_accuracy():
    from upt_jax.train.trainer import progress_postfix

    m = {"loss": 0.41234, "surrogate": -1.0, "reward/mean": 0.5, "dpo/rollout/accuracy": 0.75, "grad_norm": 3.0}
    assert progress_postfix(m) == {"loss": 0.412, "reward": 0.5, "acc": 0.75}
    assert progress_postfix({"loss": 2.0, "surrogate": -1.0}) == {"loss": 2.0}  # SFT: the NLL


def test_explained_variance_against_its_definition():
    from upt_jax.models import explained_variance

    rng = np.random.default_rng(0)
    returns = rng.normal(size=(3, 6)).astype(np.float32)
    mask = (rng.random((3, 6)) > 0.3).astype(np.float32)
    values = returns + 0.5 * rng.normal(size=(3, 6)).astype(np.float32)
    r, v = returns[mask > 0], values[mask > 0]
    assert float(explained_variance(values, returns, mask)) == pytest.approx(1 - np.var(r - v) / np.var(r), rel=1e-5)
    assert float(explained_variance(returns, returns, mask)) == pytest.approx(1.0)  # a perfect critic
    assert float(explained_variance(np.zeros_like(values), returns, mask)) == pytest.approx(0.0, abs=1e-6)
    assert float(explained_variance(values, np.ones_like(returns), mask)) == 0.0  # constant returns: 0, not NaN


def test_a_resumed_run_keeps_what_its_config_recorded(tmp_path):
    """A run directory with a saved step resumes only what its config.json says it trains (model,
    data, rewards, seed): a changed data file or starting model would otherwise continue, or find
    finished, a run of something else. The step count may grow; the learning rate, performance and
    logging settings may change; without a saved step nothing is checked."""
    from upt_jax.train.recipe_io import check_resumed_config

    c = shrink(grpo.get_config(), tmp_path / "run", steps=1)
    train(c)
    recorded = (tmp_path / "run" / "config.json").read_text()
    longer = shrink(grpo.get_config(), tmp_path / "run", steps=2)
    longer.train.microbatches = 2  # a memory setting, not what is trained
    longer.train.learning_rate /= 10  # how a diverged run recovers from its last good checkpoint
    longer.log.jsonl = True
    check_resumed_config(longer.run_dir, longer)
    changes = (
        ("data.tiers", ("add_3",)),
        ("seed", 7),
        ("reward.normalize", "batch"),
        ("model.overrides.num_layers", 3),
    )
    for key, value in changes:
        other = shrink(grpo.get_config(), tmp_path / "run", steps=2)
        node = other
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
        with pytest.raises(ValueError, match=rf"holds a checkpoint of a run with {key}=.*this run has {key}="):
            check_resumed_config(other.run_dir, other)
    other = shrink(grpo.get_config(), tmp_path / "run", steps=2)
    other.data.tiers = ("add_3",)
    with pytest.raises(ValueError, match="use a new run directory"):
        Trainer(other)
    assert (tmp_path / "run" / "config.json").read_text() == recorded  # the record is not replaced
    # a path may move (the same content elsewhere: a moved checkout or worktree); other content may not
    import shutil

    for name, text in (("a.jsonl", "x\n"), ("b.jsonl", "x\n"), ("c.jsonl", "y\n")):
        (tmp_path / name).write_text(text)
    shutil.copytree(tmp_path / "run" / "checkpoints", tmp_path / "base")  # a directory and its copy
    shutil.copytree(tmp_path / "base", tmp_path / "moved_base")
    record = json.loads(recorded)
    record["data"]["path"], record["model"]["checkpoint"] = str(tmp_path / "a.jsonl"), str(tmp_path / "base")
    (tmp_path / "run" / "config.json").write_text(json.dumps(record))
    moved = shrink(grpo.get_config(), tmp_path / "run", steps=2)
    moved.data.path, moved.model.checkpoint = str(tmp_path / "b.jsonl"), str(tmp_path / "moved_base")
    check_resumed_config(moved.run_dir, moved)
    moved.data.path = str(tmp_path / "c.jsonl")
    with pytest.raises(ValueError, match=r"data\.path="):
        check_resumed_config(moved.run_dir, moved)
    moved.data.path = str(tmp_path / "b.jsonl")
    record["data"]["path"] = str(tmp_path / "gone.jsonl")  # the recorded place no longer exists: taken as moved
    (tmp_path / "run" / "config.json").write_text(json.dumps(record))
    check_resumed_config(moved.run_dir, moved)
    (tmp_path / "run" / "config.json").write_text(recorded)
    fresh = shrink(grpo.get_config(), tmp_path / "fresh", steps=1)
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "config.json").write_text(recorded)  # no saved step: a new run, nothing to check
    fresh.data.tiers = ("add_3",)
    check_resumed_config(fresh.run_dir, fresh)
