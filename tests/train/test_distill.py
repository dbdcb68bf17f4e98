"""Distillation through the trainer (experiments/distill.py): a tiny SFT'd teacher built on the fly,
forward KL (offline, teacher logits per step) and on-policy reverse KL (teacher log-probs of the
student's samples), the teacher's inputs reaching the loss, and the errors for a missing teacher
or another vocabulary."""

import jax
import numpy as np
import pytest
from flax import nnx

from experiments import distill, sft
from upt_jax import upge
from upt_jax.models import init_model, preset, save_hf_checkpoint
from upt_jax.train.step import upge_objective, teacher_logits
from upt_jax.train.trainer import train
from tests.train.batches import rl_batch
from tests.train.test_trainer import TINY as STUDENT, shrink as shrink_run

TEACHER = dict(num_layers=1, hidden_size=48, intermediate_size=96, num_heads=2, num_kv_heads=1, head_dim=24)


def shrink(c, run_dir, steps, model=STUDENT):
    """test_trainer's tiny run (2 questions, 2 rollouts of 8 tokens, 2 × 4 simulated devices), with
    ``model``'s shape and synchronous checkpoints."""
    c = shrink_run(c, run_dir, steps)
    c.model.init = "preset"
    c.model.overrides = dict(model)
    c.checkpoint.async_save = False
    return c


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """A teacher of another shape than the student: a few SFT steps at a high learning rate."""
    d = tmp_path_factory.mktemp("teacher")
    c = shrink(sft.get_config(), d, steps=3, model=TEACHER)
    c.train.learning_rate = 1e-2
    train(c)
    return str(d)


def _distill(variant, run_dir, teacher, steps, **student):
    c = shrink(distill.get_config(variant), run_dir, steps)
    c.teacher.run_dir = teacher
    for k, v in student.items():
        setattr(c.model, k, v)
    return c


def test_forward_kl_decreases_towards_the_teacher(teacher_run, tmp_path):
    c = _distill("fkl", tmp_path / "fkl", teacher_run, steps=3)
    c.train.learning_rate = 1e-2
    ms = train(c)
    kl = [m["distill/forward_kl"] for m in ms]
    assert all(np.isfinite(kl)) and kl[0] > 0.1, kl  # teacher logits of zeros: a uniform teacher
    assert kl[-1] < kl[0], kl
    assert all(m["skipped"] == 0 and m["grad_norm"] > 1e-3 for m in ms)


def test_forward_kl_to_itself_is_zero(teacher_run, tmp_path):
    # the student starts as the teacher (its shape from the run's config.json): KL 0, gradient 0. Were the
    # teacher logits lost on the way (zeros: a uniform teacher), both would be far from 0
    c = _distill("fkl", tmp_path / "self", teacher_run, steps=1, init="checkpoint", checkpoint=teacher_run)
    (m,) = train(c)
    assert abs(m["distill/forward_kl"]) < 1e-5 and m["grad_norm"] < 1e-4, m


def test_on_policy_reverse_kl(teacher_run, tmp_path):
    c = _distill("on_policy", tmp_path / "rkl", teacher_run, steps=2)
    ms = train(c)
    for m in ms:
        # mean_t (log π_θ − log π_T) on the student's samples: a sample estimate of KL ≥ 0 (it can dip
        # a little below 0). With teacher_logp of zeros it would be mean_t log π_θ = −nll < −1
        assert np.isfinite(m["distill/reverse_kl"]) and m["nll"] > 1.0, m
        assert m["distill/reverse_kl"] > -0.5 and abs(m["distill/reverse_kl"] + m["nll"]) > 0.5, m
        assert "reward/mean" in m and m["skipped"] == 0 and m["grad_norm"] > 1e-3


def test_top_k_teacher_logits_give_the_recipes_top_k_loss():
    """Sparse teacher logits (top-k values and ids, as the trainer sends them under top_k) give the
    loss, gradient and KL of `upge.forward_kl_loss` with the same top_k on dense logits."""
    cfg = preset("tiny", vocab_size=64, **STUDENT)
    (graphdef, params), (_, t_params) = nnx.split(init_model(cfg, 0)), nnx.split(init_model(cfg, 1))
    b = rl_batch(64, group_size=1, seed=0)
    tok, attn, mask = b["tokens"], b["attention_mask"], b["mask"]
    objective = upge_objective(upge.get_recipe("distill_fkl", top_k=5), chunk_size=4)

    def ours(p, tp):
        vals, ids = teacher_logits(nnx.merge(graphdef, tp), tok, attn, vocab_size=64, top_k=5, chunk_size=4)
        batch, _ = objective.prepare(
            dict(tokens=tok, attention_mask=attn, mask=mask, teacher_logits=vals, teacher_ids=ids)
        )
        dens = objective.denominators(batch)
        sums, m = objective.sums(nnx.merge(graphdef, p), batch)
        return sum(sums[k] / dens[k] for k in sums), m["distill/forward_kl"]

    def theirs(p, tp):
        dense = teacher_logits(nnx.merge(graphdef, tp), tok, attn, vocab_size=64)
        z, _ = nnx.merge(graphdef, p)(tok, attention_mask=attn)
        z = jax.numpy.pad(z[:, :-1], ((0, 0), (1, 0), (0, 0)))  # aligned with the tokens they predict
        s, d, m = upge.forward_kl_loss(z, dense, mask, top_k=5)
        return s / d, m["kl"]

    both = jax.jit(lambda p, tp: [jax.value_and_grad(f, has_aux=True)(p, tp) for f in (ours, theirs)])
    ((l1, kl1), g1), ((l2, kl2), g2) = both(params, t_params)
    np.testing.assert_allclose(kl1, kl2, rtol=1e-5)
    assert kl1 > 0.1
    np.testing.assert_allclose(l1, l2, rtol=1e-5)
    for x, y in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(x, y, atol=1e-6)


def test_missing_teacher_fails_before_any_compute(tmp_path):
    c = _distill("fkl", tmp_path / "run", str(tmp_path / "no_teacher"), steps=1)
    with pytest.raises(FileNotFoundError, match=r"config\.teacher\.run_dir=.*experiments/sft\.py"):
        train(c)
    assert not (tmp_path / "run").exists()  # nothing was created, read or built
    c.teacher.run_dir = ""
    with pytest.raises(ValueError, match=r"config\.teacher\.run_dir is empty"):
        train(c)


def test_teacher_of_another_vocabulary_is_refused(tmp_path):
    # a HF checkpoint: a run cannot train a 64-row embedding on the 105-token tokenizer (refused)
    save_hf_checkpoint(init_model(preset("tiny", **dict(TEACHER, vocab_size=64)), 0), tmp_path / "teacher64")
    c = _distill("fkl", tmp_path / "run", "", steps=1)
    c.teacher.hf_dir = str(tmp_path / "teacher64")
    with pytest.raises(ValueError, match=r"config\.teacher\.hf_dir=.*vocabulary has 64 entries"):
        train(c)


def test_config_variants():
    fkl, rkl = distill.get_config(), distill.get_config("on_policy")
    assert (fkl.recipe.name, fkl.mode) == ("distill_fkl", "offline")
    assert (rkl.recipe.name, rkl.mode) == ("distill_on_policy", "online")
    assert rkl.rollout.max_new_tokens >= 384 and fkl.teacher.run_dir == distill.TEACHER_RUN_DIR
    with pytest.raises(ValueError, match="unknown variant"):
        distill.get_config("jsd")


def test_a_shipped_model_directory_is_a_teacher(tmp_path):
    """upt_jax.bases promises that whatever reads a run directory reads a shipped model directory, a
    teacher included (its path check asked for a checkpoints/ step and refused one)."""
    from upt_jax import bases
    from upt_jax.train.checks import check_teacher_paths

    c = _distill("fkl", tmp_path / "run", bases.base_dir("arith_hint"), steps=1)
    check_teacher_paths(c)
    c.teacher.run_dir = str(tmp_path)  # an empty directory is still refused
    with pytest.raises(FileNotFoundError, match="holds no saved step"):
        check_teacher_paths(c)


def test_forward_kl_with_lora_trains_only_the_adapters_towards_the_teacher(teacher_run, tmp_path):
    """Distillation with LoRA (issue #23: every regime): the student's base stays bitwise frozen,
    only its adapters move, and the forward KL to the teacher falls."""
    from upt_jax.train.trainer import Trainer

    c = _distill("fkl", tmp_path / "fkl_lora", teacher_run, steps=3)
    c.model.lora.update(dict(rank=4, alpha=8.0, dropout=0.0))
    c.train.learning_rate = 1e-2
    flat = lambda p: {"/".join(map(str, k)): np.asarray(v[...]) for k, v in nnx.to_flat_state(p)}  # noqa: E731
    t = Trainer(c)
    try:
        before = flat(jax.device_get(t.state.params))
        ms = t.run()
        after = flat(jax.device_get(t.state.params))
    finally:
        t.close()
    moved = {k for k in before if not np.array_equal(before[k], after[k])}
    assert moved and all(k.endswith(("/lora_a", "/lora_b")) for k in moved), sorted(moved)[:5]
    kl = [m["distill/forward_kl"] for m in ms]
    assert all(np.isfinite(kl)) and kl[-1] < kl[0], kl
