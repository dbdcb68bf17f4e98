"""Gradient equivalence: ``jax.grad`` of the UPGE surrogate == ``jax.grad`` of the textbook loss.

For every recipe, on random fp32 batches with ragged right-padded rows, the
gradient of ``normalise(*compute_loss(recipe, ...))`` with respect to the
differentiated inputs equals the gradient of the independent textbook loss in
``tests/upge/textbook.py`` within 1e-6. Layout adapters map the textbook's
separate arrays (rollouts + one demonstration per question; chosen/rejected
pairs) onto the library's one-batch layout (a group = G rollouts then the demo;
a pair = a group of 2 rows).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import upt_jax.upge as upge
from tests.upge import textbook as tb
from tests.upge.batches import random_batch

ATOL = 1e-6
SEEDS = (0, 1)


def _loss(recipe, group_size, batch, entropy=None):
    def f(logp):
        sums, dens, _ = upge.compute_loss(recipe, logp, batch, group_size=group_size)
        return upge.normalise(sums, dens)

    return f


def _assert_grads(mine, textbook, args):
    g1 = jax.grad(mine, argnums=tuple(range(len(args))))(*args)
    g2 = jax.grad(textbook, argnums=tuple(range(len(args))))(*args)
    for a, b in zip(g1, g2):
        assert np.all(np.isfinite(a)) and np.all(np.isfinite(b))
        assert float(jnp.abs(b).max()) > 1e-4, "degenerate test: textbook gradient is ~0"
        np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)


def _batch(seed, b=16, t=8, g=4, **kw):
    return random_batch(seed, b=b, t=t, group_size=g, pad_scale=1.0, **kw)


def _assert_objective(recipe, group_size, batch, logp, expected):
    """The logged ``objective`` (not the surrogate's value) is the textbook loss value."""
    _, _, m = upge.compute_loss(recipe, logp, batch, group_size=group_size)
    np.testing.assert_allclose(m["objective"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sum(v for k, v in m.items() if k.startswith("loss/")), m["objective"], rtol=1e-6)


def _clip_fraction(recipe, logp, batch, g):
    _, _, m = upge.compute_loss(recipe, logp, batch, group_size=g)
    return [float(v) for k, v in m.items() if k.endswith("clip_frac")]


# ----------------------------------------------------------------------------- on-policy / GRPO family

RL_CASES = {
    # name: (recipe kwargs, group size, batch kwargs, textbook call)
    "sft": ({}, 1, {}, lambda lp, b, g: tb.sft(lp, b["mask"])),
    "reinforce": ({}, 1, {"binary_rewards": False}, lambda lp, b, g: tb.reinforce(lp, b["mask"], b["rewards"])),
    "ppo": ({}, 1, {}, lambda lp, b, g: tb.ppo(lp, b["old_logp"], b["mask"], b["rewards"], b["values"])),
    "grpo": ({}, 4, {}, lambda lp, b, g: tb.grpo(lp, b["old_logp"], b["mask"], b["rewards"], group_size=g)),
    "grpo_kl": (
        {"kl_coef": 0.04},
        4,
        {},
        lambda lp, b, g: tb.grpo(
            lp, b["old_logp"], b["mask"], b["rewards"], group_size=g, beta=0.04, ref_logp=b["ref_logp"]
        ),
    ),
    "dr_grpo": ({}, 4, {}, lambda lp, b, g: tb.dr_grpo(lp, b["old_logp"], b["mask"], b["rewards"], group_size=g)),
    "dapo": ({}, 4, {}, lambda lp, b, g: tb.dapo(lp, b["old_logp"], b["mask"], b["rewards"], group_size=g)),
    "gspo": (
        {},
        4,
        {"old_noise": 1e-3},
        lambda lp, b, g: tb.gspo(lp, b["old_logp"], b["mask"], b["rewards"], group_size=g),
    ),
    "cispo": ({}, 4, {}, lambda lp, b, g: tb.cispo(lp, b["old_logp"], b["mask"], b["rewards"], group_size=g)),
    "rloo_ppo": (
        {},
        4,
        {"binary_rewards": False},
        lambda lp, b, g: tb.rloo(lp, b["old_logp"], b["mask"], b["rewards"], group_size=g),
    ),
    "reinforce_pp": (
        {},
        4,
        {},
        lambda lp, b, g: tb.reinforce_pp(lp, b["old_logp"], b["mask"], b["rewards"], group_size=g),
    ),
    "remax": ({}, 1, {}, lambda lp, b, g: tb.remax(lp, b["mask"], b["rewards"], b["baseline_rewards"])),
    "rft": ({}, 1, {}, lambda lp, b, g: tb.rft(lp, b["mask"], b["rewards"])),
    "distill_on_policy": ({}, 1, {}, lambda lp, b, g: tb.distill_on_policy(lp, b["teacher_logp"], b["mask"])),
    "luffy": (
        {},
        4,
        {"demo_last": True},
        lambda lp, b, g: tb.luffy(lp, b["old_logp"], b["mask"], b["rewards"], group_size=g),
    ),
    # issue 24: the papers' rloo, the 2025-26 losses (SPEC.md rows), the std estimator as a hyper-parameter
    "rloo": (
        {},
        4,
        {"binary_rewards": False},
        lambda lp, b, g: tb.rloo_paper(lp, b["mask"], b["rewards"], group_size=g),
    ),
    "sapo": ({}, 4, {}, lambda lp, b, g: tb.sapo(lp, b["old_logp"], b["mask"], b["rewards"], group_size=g)),
    "gmpo": ({}, 4, {}, lambda lp, b, g: tb.gmpo(lp, b["old_logp"], b["mask"], b["rewards"], group_size=g)),
    "gpg": ({}, 4, {}, lambda lp, b, g: tb.gpg(lp, b["mask"], b["rewards"], group_size=g)),
    "gpg_std": (
        {"scale_by_std": True, "std_ddof": 1},
        4,
        {},
        lambda lp, b, g: tb.gpg(lp, b["mask"], b["rewards"], group_size=g, scale_by_std=True, ddof=1),
    ),
    "clip_cov": (
        {"ratio": 0.1, "cov_low": 0.0, "cov_high": 10.0},
        4,
        {},
        lambda lp, b, g: tb.clip_cov(
            lp,
            b["old_logp"],
            b["mask"],
            b["rewards"],
            jax.random.key(5),
            group_size=g,
            clip_ratio=0.1,
            cov_low=0.0,
            cov_high=10.0,
        ),
    ),
    "kl_cov": (
        {"ratio": 0.1},
        4,
        {},
        lambda lp, b, g: tb.kl_cov(lp, b["old_logp"], b["mask"], b["rewards"], group_size=g, kl_cov_ratio=0.1),
    ),
    "dppo_tv": ({}, 4, {}, lambda lp, b, g: tb.dppo_tv(lp, b["old_logp"], b["mask"], b["rewards"], group_size=g)),
    "dppo_kl": (
        {"is_cap": 1.5},
        4,
        {},
        lambda lp, b, g: tb.dppo_kl(lp, b["old_logp"], b["mask"], b["rewards"], group_size=g, is_cap=1.5),
    ),
    "opd_pg": (
        {"alpha": 0.5},
        4,
        {},
        lambda lp, b, g: tb.opd_pg(
            lp, b["old_logp"], b["teacher_logp"], b["mask"], b["rewards"], group_size=g, alpha=0.5
        ),
    ),
    "kto": ({}, 1, {}, lambda lp, b, g: tb.kto(lp, b["ref_logp"], b["mask"], b["kto_label"], kl_ref=b["kto_z0"][0])),
    "grpo_ddof1": (
        {"std_ddof": 1, "std_eps": 1e-4},
        4,
        {},
        lambda lp, b, g: tb.grpo(lp, b["old_logp"], b["mask"], b["rewards"], group_size=g, ddof=1, eps=1e-4),
    ),
    "sapo_ddof1": (
        {"std_ddof": 1},
        4,
        {},
        lambda lp, b, g: tb.sapo(lp, b["old_logp"], b["mask"], b["rewards"], group_size=g, ddof=1),
    ),
}
_BASE = {"grpo_kl": "grpo", "gpg_std": "gpg", "grpo_ddof1": "grpo", "sapo_ddof1": "sapo"}
# masks other than clips that the batch must exercise (some tokens kept, some not): metric suffix
_MASKED = {"dppo_tv": "clip_frac", "dppo_kl": "clip_frac"}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(RL_CASES))
def test_rl_recipe_gradient_equals_textbook(name, seed):
    kwargs, g, bkw, textbook = RL_CASES[name]
    recipe = upge.get_recipe(_BASE.get(name, name), **kwargs)
    logp, batch = _batch(seed, g=g, **bkw)
    if name == "clip_cov":  # the textbook's draw: jax.random.uniform(key, [B, T]) with its key
        batch = dict(batch, clip_cov_uniforms=jax.random.uniform(jax.random.key(5), batch["mask"].shape))
    _assert_grads(_loss(recipe, g, batch), lambda lp: textbook(lp, batch, g), (logp,))
    if name == "distill_on_policy":  # the textbook writes its policy-gradient loss; the objective is the KL
        value = tb._token_mean(logp - batch["teacher_logp"], batch["mask"])
    else:
        value = textbook(logp, batch, g)
    _assert_objective(recipe, g, batch, logp, value)
    if name in _MASKED or any(
        isinstance(s, upge.Part) and "clip" in s.name for t in recipe.terms for _, p in t.roles() for s in p.stabiliser
    ):
        fr = _clip_fraction(recipe, logp, batch, g)
        assert any(0 < f < 1 for f in fr), f"batch does not exercise the clip: {fr}"


@pytest.mark.parametrize(
    "name,off", [("clip_cov", {"cov_low": 1e8, "cov_high": 1e9}), ("kl_cov", {"ppo_kl_coef": 0.0})]
)
def test_covariance_selection_is_exercised(name, off):
    """The equivalence batches select tokens: turning the selection off changes the gradient."""
    kwargs, g, bkw, _ = RL_CASES[name]
    logp, batch = _batch(0, g=g, **bkw)
    batch = dict(batch, clip_cov_uniforms=jax.random.uniform(jax.random.key(5), batch["mask"].shape))
    grad = lambda r: jax.grad(_loss(r, g, batch))(logp)
    on, without = grad(upge.get_recipe(name, **kwargs)), grad(upge.get_recipe(name, **dict(kwargs, **off)))
    assert float(jnp.abs(on - without).max()) > 1e-3


@pytest.mark.parametrize("seed", SEEDS)
def test_grpo_process_gradient_equals_textbook(seed):
    recipe = upge.get_recipe("grpo_process")
    logp, batch = _batch(seed, g=4)
    rng = np.random.RandomState(seed + 11)
    mask = np.asarray(batch["mask"])
    step_mask = (rng.rand(*mask.shape) < 0.35).astype(np.float32) * mask
    batch = dict(
        batch, step_mask=jnp.asarray(step_mask), step_rewards=jnp.asarray(rng.randn(*mask.shape).astype(np.float32))
    )
    theirs = lambda lp: tb.grpo_process(
        lp, batch["old_logp"], batch["mask"], batch["step_rewards"], batch["step_mask"], group_size=4
    )
    _assert_grads(_loss(recipe, 4, batch), theirs, (logp,))
    _assert_objective(recipe, 4, batch, logp, theirs(logp))


def test_gae_equals_textbook():
    logp, b = _batch(3, g=1)
    tok = upge.last_token_rewards(b["rewards"], b["mask"])
    ours, _ = upge.gae_advantages(tok, b["values"], b["mask"], 1.0, 0.95)
    np.testing.assert_allclose(ours, tb.gae(tok, b["values"], b["mask"], 1.0, 0.95), atol=1e-6)


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_kl_estimators_equal_textbook(kind):
    logp, b = _batch(4, g=1)
    ours = lambda lp: jnp.sum(upge.kl_estimate(lp, b["ref_logp"], kind) * b["mask"])
    theirs = lambda lp: jnp.sum(getattr(tb, kind)(lp, b["ref_logp"]) * b["mask"])
    np.testing.assert_allclose(ours(logp), theirs(logp), rtol=1e-5)
    _assert_grads(ours, theirs, (logp,))


# ----------------------------------------------------------------------------- rollouts + demonstrations


def _with_demos(seed, num_groups=4, g=3, t=8):
    """Textbook-style inputs (rollouts, one demo per question) and the library's combined batch."""
    logp, roll = _batch(seed, b=num_groups * g, t=t, g=g)
    demo_logp, demo = _batch(seed + 100, b=num_groups, t=t, g=1)
    rng = np.random.default_rng(seed)
    rewards = rng.integers(0, 2, size=num_groups * g).astype(np.float32)
    rewards[:g] = 0.0  # question 0: nothing solved (-> SFT in HPT)
    rewards[g : 2 * g] = 1.0  # question 1: all solved (zero-variance group)
    rewards[2 * g : 3 * g] = [1.0, 0.0] * (g // 2) + [1.0] * (g % 2)  # question 2: mixed
    roll["rewards"] = jnp.asarray(rewards)

    def combine(x, d):
        x = x.reshape((num_groups, g) + x.shape[1:])
        return jnp.concatenate([x, d.reshape((num_groups, 1) + d.shape[1:])], 1).reshape(
            (num_groups * (g + 1),) + x.shape[2:]
        )

    batch = {k: combine(roll[k], demo[k]) for k in ("mask", "old_logp", "entropy")}
    batch["rewards"] = combine(roll["rewards"], jnp.ones(num_groups))
    batch["is_demo"] = combine(jnp.zeros(num_groups * g, bool), jnp.ones(num_groups, bool))

    def split(x):
        x = x.reshape((num_groups, g + 1) + x.shape[1:])
        return x[:, :g].reshape((num_groups * g,) + x.shape[2:]), x[:, g]

    return logp, roll, demo_logp, demo, batch, combine, split


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("variant", ["paper_text", "released_code"])
def test_hpt_gradient_equals_textbook(variant, seed):
    g = 3
    logp, roll, demo_logp, demo, batch, combine, split = _with_demos(seed, g=g)
    recipe = upge.get_recipe("hpt", variant=variant)
    mine = lambda lp, dlp: _loss(recipe, g + 1, batch)(combine(lp, dlp))
    theirs = lambda lp, dlp: tb.hpt(
        lp, roll["old_logp"], roll["mask"], roll["rewards"], dlp, demo["mask"], group_size=g, variant=variant
    )
    _assert_grads(mine, theirs, (logp, demo_logp))
    _assert_objective(recipe, g + 1, batch, combine(logp, demo_logp), theirs(logp, demo_logp))
    # both routes are exercised
    gd, dd = jax.grad(theirs, argnums=(0, 1))(logp, demo_logp)
    assert float(jnp.abs(gd).sum()) > 0 and float(jnp.abs(dd).sum()) > 0


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("routing", ["mixed", "sft_only"])
@pytest.mark.parametrize("sft_loss_coef", [None, 0.3])
def test_hpt_released_code_gradient_equals_textbook(routing, sft_loss_coef, seed):
    """Released code: per-routed-row RL sum plus ``sft_loss_coef`` × the demos' pooled NLL token mean."""
    g = 3
    logp, roll, demo_logp, demo, batch, combine, split = _with_demos(seed, g=g)
    if routing == "sft_only":  # nothing solved: every question learns from its demonstration
        roll["rewards"] = jnp.zeros_like(roll["rewards"])
        batch["rewards"] = combine(roll["rewards"], jnp.ones(demo_logp.shape[0]))
    kw = {} if sft_loss_coef is None else {"sft_loss_coef": sft_loss_coef}
    recipe = upge.get_recipe("hpt", variant="released_code", **kw)
    mine = lambda lp, dlp: _loss(recipe, g + 1, batch)(combine(lp, dlp))
    theirs = lambda lp, dlp: tb.hpt(
        lp,
        roll["old_logp"],
        roll["mask"],
        roll["rewards"],
        dlp,
        demo["mask"],
        group_size=g,
        variant="released_code",
        **kw,
    )
    if routing == "mixed":
        _assert_grads(mine, theirs, (logp, demo_logp))
    else:
        (g1, d1), (g2, d2) = (jax.grad(f, argnums=(0, 1))(logp, demo_logp) for f in (mine, theirs))
        assert float(jnp.abs(g1).max()) == 0.0 and float(jnp.abs(g2).max()) == 0.0
        assert float(jnp.abs(d2).max()) > 1e-4
        np.testing.assert_allclose(d1, d2, rtol=0, atol=ATOL)
    _assert_objective(recipe, g + 1, batch, combine(logp, demo_logp), theirs(logp, demo_logp))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("offline", ["rl", "both"])
def test_hpt_offline_signal_gradient_equals_textbook(offline, seed):
    """The offline-signal ablation: off-policy RL on the demonstration instead of (or with) SFT."""
    g = 3
    logp, roll, demo_logp, demo, batch, combine, split = _with_demos(seed, g=g)
    recipe = upge.get_recipe("hpt", offline=offline)
    mine = lambda lp, dlp: _loss(recipe, g + 1, batch)(combine(lp, dlp))
    theirs = lambda lp, dlp: tb.hpt(
        lp, roll["old_logp"], roll["mask"], roll["rewards"], dlp, demo["mask"], group_size=g, offline=offline
    )
    _assert_grads(mine, theirs, (logp, demo_logp))
    _assert_objective(recipe, g + 1, batch, combine(logp, demo_logp), theirs(logp, demo_logp))
    sft_only = lambda lp, dlp: tb.hpt(
        lp, roll["old_logp"], roll["mask"], roll["rewards"], dlp, demo["mask"], group_size=g
    )
    d_mine = jax.grad(theirs, argnums=1)(logp, demo_logp)
    d_sft = jax.grad(sft_only, argnums=1)(logp, demo_logp)
    assert float(jnp.abs(d_mine - d_sft).max()) > 1e-4  # the demo gradient really changes
    with pytest.raises(ValueError, match="paper_text"):
        upge.get_recipe("hpt", variant="released_code", offline=offline)


@pytest.mark.parametrize("seed", SEEDS)
def test_srft_gradient_equals_textbook(seed):
    g = 3
    logp, roll, demo_logp, demo, batch, combine, split = _with_demos(seed, g=g)
    recipe = upge.get_recipe("srft")
    mine = lambda lp, dlp: _loss(recipe, g + 1, batch)(combine(lp, dlp))
    theirs = lambda lp, dlp: tb.srft(
        lp, roll["mask"], roll["rewards"], roll["entropy"], dlp, demo["mask"], demo["entropy"], group_size=g
    )
    _assert_grads(mine, theirs, (logp, demo_logp))
    _assert_objective(recipe, g + 1, batch, combine(logp, demo_logp), theirs(logp, demo_logp))


# ----------------------------------------------------------------------------- preference


def _pairs(seed, p=8, t=8):
    rng = np.random.default_rng(seed)
    cl, cb = _batch(seed, b=p, t=t, g=1)
    rl, rb = _batch(seed + 50, b=p, t=t, g=1)
    return cl, rl, cb, rb


def _interleave(a, b):
    return jnp.stack([a, b], 1).reshape((-1,) + a.shape[1:])


PREF = {
    "dpo": (
        {"label_smoothing": 0.1},
        True,
        lambda cl, rl, cb, rb: tb.dpo(
            cl, rl, cb["mask"], rb["mask"], cb["ref_logp"], rb["ref_logp"], label_smoothing=0.1
        ),
        lambda cl, rl, cb, rb: upge.dpo_loss(
            cl, rl, cb["mask"], rb["mask"], cb["ref_logp"], rb["ref_logp"], label_smoothing=0.1
        ),
    ),
    "dpo_plain": (
        {},
        True,
        lambda cl, rl, cb, rb: tb.dpo(cl, rl, cb["mask"], rb["mask"], cb["ref_logp"], rb["ref_logp"]),
        lambda cl, rl, cb, rb: upge.dpo_loss(cl, rl, cb["mask"], rb["mask"], cb["ref_logp"], rb["ref_logp"]),
    ),
    "ipo": (
        {},
        True,
        lambda cl, rl, cb, rb: tb.ipo_paper(cl, rl, cb["mask"], rb["mask"], cb["ref_logp"], rb["ref_logp"]),
        lambda cl, rl, cb, rb: upge.ipo_loss(cl, rl, cb["mask"], rb["mask"], cb["ref_logp"], rb["ref_logp"]),
    ),
    "ipo_length_avg": (
        {},
        True,
        lambda cl, rl, cb, rb: tb.ipo(cl, rl, cb["mask"], rb["mask"], cb["ref_logp"], rb["ref_logp"]),
        lambda cl, rl, cb, rb: upge.ipo_loss(
            cl, rl, cb["mask"], rb["mask"], cb["ref_logp"], rb["ref_logp"], length_average=True
        ),
    ),
    "simpo": (
        {},
        False,
        lambda cl, rl, cb, rb: tb.simpo(cl, rl, cb["mask"], rb["mask"]),
        lambda cl, rl, cb, rb: upge.simpo_loss(cl, rl, cb["mask"], rb["mask"]),
    ),
    "orpo": (
        {},
        False,
        lambda cl, rl, cb, rb: tb.orpo(cl, rl, cb["mask"], rb["mask"]),
        lambda cl, rl, cb, rb: upge.orpo_loss(cl, rl, cb["mask"], rb["mask"]),
    ),
    "orpo_paper": (
        {},
        False,  # the paper's Eq. 6 (issue 24): the `orpo` default
        lambda cl, rl, cb, rb: tb.orpo_paper(cl, rl, cb["mask"], rb["mask"]),
        lambda cl, rl, cb, rb: upge.orpo_loss(cl, rl, cb["mask"], rb["mask"]),
    ),
}


_PREF_RECIPE = {"dpo_plain": "dpo", "orpo_paper": "orpo"}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(PREF))
def test_preference_gradient_equals_textbook(name, seed):
    kwargs, with_ref, textbook, standalone = PREF[name]
    recipe = upge.get_recipe(_PREF_RECIPE.get(name, name), **kwargs)
    cl, rl, cb, rb = _pairs(seed)
    batch = {"mask": _interleave(cb["mask"], rb["mask"])}
    if with_ref:
        batch["ref_logp"] = _interleave(cb["ref_logp"], rb["ref_logp"])
    via_recipe = lambda c, r: _loss(recipe, 2, batch)(_interleave(c, r))
    theirs = lambda c, r: textbook(c, r, cb, rb)
    _assert_grads(via_recipe, theirs, (cl, rl))
    via_fn = lambda c, r: upge.normalise(*standalone(c, r, cb, rb)[:2])
    _assert_grads(via_fn, theirs, (cl, rl))
    # the standalone function reports the method's own loss value
    np.testing.assert_allclose(standalone(cl, rl, cb, rb)[2]["objective"], theirs(cl, rl), rtol=1e-5)
    _assert_objective(recipe, 2, batch, _interleave(cl, rl), theirs(cl, rl))


# ----------------------------------------------------------------------------- distillation


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("top_k", [None, 3])
def test_distill_fkl_gradient_equals_textbook(top_k, seed):
    _, b = _batch(seed, g=1, vocab=13)
    recipe = upge.get_recipe("distill_fkl", top_k=top_k)
    batch = {"mask": b["mask"], "teacher_logits": b["teacher_logits"]}
    via_recipe = lambda s: _loss(recipe, 1, batch)(jax.nn.log_softmax(s, axis=-1))
    theirs = lambda s: tb.distill_fkl(s, b["teacher_logits"], b["mask"], top_k=top_k)
    _assert_grads(via_recipe, theirs, (b["student_logits"],))
    _assert_objective(recipe, 1, batch, jax.nn.log_softmax(b["student_logits"], axis=-1), theirs(b["student_logits"]))
    via_fn = lambda s: upge.normalise(*upge.forward_kl_loss(s, b["teacher_logits"], b["mask"], top_k=top_k)[:2])
    _assert_grads(via_fn, theirs, (b["student_logits"],))
    np.testing.assert_allclose(
        upge.forward_kl_loss(b["student_logits"], b["teacher_logits"], b["mask"], top_k=top_k)[2]["kl"],
        theirs(b["student_logits"]),
        rtol=1e-5,
    )


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_generalized_jsd_gradient_equals_textbook(beta):
    _, b = _batch(7, g=1, vocab=13)
    ours = lambda s: upge.normalise(*upge.generalized_jsd_loss(s, b["teacher_logits"], b["mask"], beta=beta)[:2])
    theirs = lambda s: tb.distill_jsd(s, b["teacher_logits"], b["mask"], beta)
    _assert_grads(ours, theirs, (b["student_logits"],))


def test_every_recipe_has_an_equivalence_test():
    covered = set(RL_CASES) | {"hpt", "srft", "distill_fkl", "grpo_process"} | {_PREF_RECIPE.get(k, k) for k in PREF}
    assert set(upge.RECIPES) <= covered, set(upge.RECIPES) - covered


@pytest.mark.parametrize("variant", ["paper_text", "released_code"])
def test_hpt_entropy_bonus_is_the_token_mean_over_routed_rows(variant):
    """``entropy_coef=c`` (the released code's ``entropy_coeff``) adds ``−c · Σ H m / Σ m`` over every
    routed row: the rollouts of RL-routed questions (P > γ) and the demos of SFT-routed ones."""
    g, c = 3, 0.01
    logp, roll, demo_logp, demo, batch, combine, split = _with_demos(0, g=g)
    passed = (np.asarray(roll["rewards"]).reshape(-1, g) > 0.5).mean(1) > 0.0  # P > γ = 0
    routed = combine(jnp.repeat(jnp.asarray(passed), g), jnp.asarray(~passed))[:, None] * batch["mask"]
    lp = combine(logp, demo_logp)

    def loss(ent, coef):
        sums, dens, _ = upge.compute_loss(
            upge.get_recipe("hpt", variant=variant, entropy_coef=coef), lp, batch, group_size=g + 1, entropy=ent
        )
        return upge.normalise(sums, dens)

    ent = batch["entropy"]
    textbook = lambda e: -c * jnp.sum(e * routed) / jnp.sum(routed)
    np.testing.assert_allclose(loss(ent, c) - loss(ent, 0.0), textbook(ent), rtol=1e-5, atol=1e-7)
    _assert_grads(lambda e: loss(e, c), textbook, (ent,))
    assert 0 < float(passed.sum()) < len(passed)  # both routes hold rows
    assert [t.name for t in upge.get_recipe("hpt", variant=variant, entropy_coef=c).terms][-1] == "entropy_bonus"
