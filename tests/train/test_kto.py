"""KTO in preference mode: unpaired labelled rows read from a file, the reference point z0 from
mismatched pairs each step, and an update that moves desirable completions up and undesirable
ones down."""

import json

import jax.numpy as jnp
import numpy as np

from upt_jax import upge
from upt_jax.train.kto import examples, kto_rows, with_reference_point


def test_examples_take_a_records_own_label_or_alternate_its_pair():
    pair = lambda r: (r["question"] + "+", r["question"] + "-")
    recs = [{"question": "a"}, {"question": "b"}, {"question": "c", "completion": "x", "label": False}]
    assert examples(recs, pair) == [("a+", True), ("b-", False), ("x", False)]


def test_reference_point_is_the_mismatched_pairs_mean_log_ratio_clamped_at_zero():
    rows = kto_rows([[1, 2], [3], [4, 5]], [[6], [7, 8], [9]], [True, False, True], pad_id=0)
    # row i of the mismatched rows: prompt i with completion i+1 (cyclically)
    first = rows["kl_tokens"][0][rows["kl_attention_mask"][0] > 0].tolist()
    assert first == [1, 2, 7, 8] and rows["kto_label"].tolist() == [1.0, 0.0, 1.0]
    batch = {k: jnp.asarray(v) for k, v in rows.items()}
    shift = {"p": 0.3, "r": 0.0}
    logp_fn = lambda params, tokens, attn: jnp.full(tokens.shape, shift[params], jnp.float32)
    out, z0 = with_reference_point(batch, logp_fn, "p", "r")
    n = rows["kl_mask"].sum(axis=1)
    np.testing.assert_allclose(z0, 0.3 * n.mean(), rtol=1e-6)
    assert "kl_tokens" not in out and np.allclose(out["kto_z0"], z0)
    _, z_neg = with_reference_point(batch, logp_fn, "r", "p")  # a negative KL estimate is clamped
    assert float(z_neg) == 0.0


def test_kto_advantage_signs_follow_the_labels():
    logp = jnp.log(jnp.full((2, 3), 0.5))
    adv, r, loss = upge.kto_advantages(logp, logp, jnp.ones((2, 3)), jnp.asarray([1.0, 0.0]), 0.0, beta=0.1)
    assert float(adv[0]) > 0 > float(adv[1]) and np.allclose(loss, 0.5) and np.allclose(r, 0.0)


def test_kto_trains_on_a_file_of_unpaired_rows(tmp_path):
    from experiments import dpo
    from tests.train.test_trainer import shrink
    from upt_jax.train.trainer import train

    path = tmp_path / "kto.jsonl"
    path.write_text(
        "".join(
            json.dumps({"question": f"say {i}", "completion": "yes" if i % 2 else "no", "label": bool(i % 2)}) + "\n"
            for i in range(8)
        )
    )
    c = shrink(dpo.get_config("kto"), tmp_path / "run", steps=2)
    c.data.source, c.data.path = "file", str(path)
    c.train.questions_per_step, c.train.learning_rate = 4, 3e-3
    c.checkpoint.every = 0
    first, second = train(c)
    # step 1: the policy is the reference, so r_θ = 0 and z0 = 0: every row's loss is 1 − σ(0)
    assert first["kto/z0"] == 0.0 and abs(first["loss"] - 0.5) < 1e-6, first
    assert first["skipped"] == 0 and first["grad_norm"] > 0
    # step 2: desirable rows now sit above z0 and undesirable ones below (margin > 0), loss < 0.5
    assert second["kto/rollout/margin"] > 0 and second["loss"] < 0.5, second
    assert second["kto/z0"] >= 0.0
