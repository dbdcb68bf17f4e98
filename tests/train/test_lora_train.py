"""Training with LoRA adapters (config.model.lora): only the adapters move, the reference is the base
with the adapters off, checkpoints hold the adapters and resume bitwise. 2-step tiny runs on a
2 × 1 × 4 mesh of 8 simulated devices (tests.train.test_trainer.shrink)."""

import math

import jax
import numpy as np
from flax import nnx

from experiments import dpo, grpo, hpt, luffy, sft, srft
from tests.train.test_trainer import _CoinVerifier, shrink
from upt_jax.train.trainer import Trainer, train

LORA = dict(rank=4, alpha=8.0, dropout=0.0)


def _lora(c, run_dir, steps, **kw):
    c = shrink(c, run_dir, steps)
    c.model.lora.update(dict(LORA, **kw))
    c.train.learning_rate = 1e-2
    return c


def _flat(params):
    return {"/".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(jax.device_get(params))}


def _run(c, coin=False):
    """``(params before, params after, metrics, trainer)`` of a run (closed); ``coin``: rewards
    alternate 0/1 (an untrained model earns none: GRPO would have no signal)."""
    t = Trainer(c)
    if coin:
        t.verifier = _CoinVerifier()
    try:
        before = _flat(t.state.params)
        metrics = t.run()
        return before, _flat(t.state.params), metrics, t
    finally:
        t.close()


def _only_adapters_moved(before, after):
    assert before.keys() == after.keys()
    moved = {k for k in before if not np.array_equal(before[k], after[k])}
    adapters = {k for k in before if k.endswith(("/lora_a", "/lora_b"))}
    assert moved and moved <= adapters, sorted(moved - adapters)[:5]  # the base is bitwise frozen
    assert any(k.endswith("/lora_b") for k in moved)


def test_sft_trains_only_the_adapters_and_checkpoints_only_them(tmp_path):
    before, after, metrics, t = _run(_lora(sft.get_config(), tmp_path / "sft", 2))
    _only_adapters_moved(before, after)
    assert all(np.isfinite(m["loss"]) and m["skipped"] == 0 for m in metrics)
    n_lora = sum(v.size for k, v in before.items() if "/lora_" in k)
    moments = [x for x in jax.tree.leaves(t.state.opt_state) if x.ndim > 0]
    assert sum(x.size for x in moments) == 2 * n_lora  # AdamW state for the adapters alone
    # the checkpoint holds the adapters (and optimiser state), not the frozen base
    meta = (tmp_path / "sft" / "checkpoints" / "2" / "state" / "_METADATA").read_text()
    assert "lora_a" in meta and "embed_tokens" not in meta and "q_proj', 'kernel" not in meta


def test_dpo_reference_is_the_base_with_adapters_off(tmp_path):
    c = _lora(dpo.get_config(), tmp_path / "dpo", 2)
    before, after, metrics, t = _run(c)
    assert t.ref_params is None  # no second copy of the model
    # step 1: B = 0, so the policy is the base exactly and every DPO margin is 0: loss = log 2
    assert abs(metrics[0]["loss"] - math.log(2.0)) < 1e-6, metrics[0]["loss"]
    assert metrics[1]["loss"] != metrics[0]["loss"]
    _only_adapters_moved(before, after)


def test_kto_reference_point_is_the_base_with_adapters_off(tmp_path):
    """KTO's z₀ (the KL of the policy to the reference on mismatched pairs) reads the reference as
    the base with the adapters off: at step 1 (B = 0) the policy is the base, so z₀ = 0 exactly;
    it ran the frozen reference's log-probs through ``ref_params`` (None under LoRA) before."""
    c = _lora(dpo.get_config("kto"), tmp_path / "kto", 2)
    before, after, metrics, t = _run(c)
    assert t.ref_params is None
    assert abs(metrics[0]["kto/z0"]) < 1e-5 and np.isfinite(metrics[1]["kto/z0"])  # two compiled paths: ~1e-7
    assert all(np.isfinite(m["loss"]) for m in metrics)
    _only_adapters_moved(before, after)


def test_grpo_with_kl_and_the_hybrids_update_only_the_adapters(tmp_path):
    c = _lora(grpo.get_config(), tmp_path / "grpo", 2, dropout=0.1)
    c.recipe.hparams.kl_coef = 0.05  # a KL to the reference (the base, adapters off)
    c.rollout.temperature = 1.0
    before, after, metrics, _ = _run(c, coin=True)
    _only_adapters_moved(before, after)
    assert all(np.isfinite(m["loss"]) and m["grad_norm"] > 0 for m in metrics)
    before, after, metrics, _ = _run(_lora(hpt.get_config(), tmp_path / "hpt", 1))
    assert metrics[0]["grad_norm"] > 0  # an untrained model routes every question to SFT
    _only_adapters_moved(before, after)
    for name, exp in (("luffy", luffy), ("srft", srft)):  # the other hybrids: demos beside rollouts
        before, after, metrics, _ = _run(_lora(exp.get_config(), tmp_path / name, 1))
        assert np.isfinite(metrics[0]["loss"]) and metrics[0]["grad_norm"] > 0, name
        _only_adapters_moved(before, after)


def _final(c):
    t = Trainer(c)  # resumes from the run directory: base rebuilt from its source, adapters restored
    try:
        return _flat(t.state.params)
    finally:
        t.close()


def test_lora_stop_and_resume_is_bitwise_identical(tmp_path):
    full = _lora(sft.get_config(), tmp_path / "full", 2, dropout=0.1)  # dropout keys follow the step
    train(full)
    half = _lora(sft.get_config(), tmp_path / "half", 1, dropout=0.1)
    train(half)
    half.train.steps = 2
    assert [m["step"] for m in train(half)] == [2]
    a, b = _final(full), _final(half)
    assert a.keys() == b.keys() and any(np.abs(v).max() > 0 for k, v in a.items() if k.endswith("lora_b"))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
