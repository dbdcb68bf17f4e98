"""The HPT gate is computed once, in the jitted loss: the logged ``gate/sft_frac`` is the mean of the
gate the loss applied to the demonstration rows (issue #19), not a host-side recomputation."""

import jax
import ml_collections
import numpy as np

from experiments import hpt
from tests.train.test_trainer import _CoinVerifier, shrink
from upt_jax.train.step import sft_gate_metric
from upt_jax.train.trainer import Trainer


def test_a_soft_gate_logs_the_sft_fraction_the_loss_applied(tmp_path):
    gamma, tau = 0.25, 0.25
    c = shrink(hpt.get_config(), tmp_path / "hpt", steps=1)
    c.recipe.hparams = ml_collections.ConfigDict(
        dict(c.recipe.hparams.to_dict(), gate="soft", gamma=gamma, temperature=tau)
    )
    c.rollout.n = 4
    t = Trainer(c)
    try:
        t.verifier = _CoinVerifier()  # both rewards in every group: pass rates strictly between 0 and 1
        m = t.train_step()
        p = np.asarray([np.mean(g["rewards"] > 0.5) for g in t.step_groups])
        key = sft_gate_metric(t.recipe)
    finally:
        t.close()
    assert key == "sft/demo/gate_mean"
    assert m["gate/sft_frac"] == m[key]  # the in-jit gate mean, as the loss applied it
    beta = 1.0 - jax.nn.sigmoid((p - gamma) / tau)  # the soft gate's SFT weight per question
    np.testing.assert_allclose(m["gate/sft_frac"], float(np.mean(beta)), rtol=1e-5)
    assert 0 < m["gate/sft_frac"] < 1 and m["gate/sft_frac"] != np.mean(p <= gamma)  # not a hard threshold


def test_a_recipe_without_a_gated_demonstration_term_logs_no_sft_fraction():
    from upt_jax import upge

    assert sft_gate_metric(upge.get_recipe("grpo")) is None
    assert sft_gate_metric(upge.get_recipe("luffy")) is None
