# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A short HPT run and its gate decisions
#
# HPT samples $n$ rollouts per question, scores them, and routes the question by its pass rate
# $P$: $P > \gamma$ → RL on its rollouts, $P \le \gamma$ → SFT on its demonstration. We train a
# tiny model (1 layer, random init) on the built-in synthetic arithmetic task for a few steps
# with the trainer API and plot, step by step, each question's pass rate and route.
# (Laptop scale: one CPU device, a few seconds per step.)

# %%
import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"  # before jax starts
os.environ.setdefault("JAX_PLATFORMS", "cpu")
import tempfile

import matplotlib.pyplot as plt
import numpy as np

from experiments import hpt
from upt_jax.train.trainer import Trainer

c = hpt.get_config()                       # the paper's variant, γ = 0
c.run_dir = tempfile.mkdtemp(prefix="hpt_notebook_")
c.model.overrides = dict(num_layers=1, hidden_size=32, intermediate_size=64, num_heads=2,
                         num_kv_heads=1, head_dim=16)
c.data.tiers, c.data.n_per_tier = ("add_2",), 64
c.train.steps, c.train.questions_per_step, c.train.learning_rate = 4, 4, 3e-3
c.rollout.n, c.rollout.max_new_tokens = 4, 12
c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 1, 1
c.checkpoint.every, c.log.progress = 0, False
gamma = float(c.recipe.hparams.gamma)

# %%
trainer = Trainer(c)
history, pass_rates = [], []
try:
    for _ in range(c.train.steps):
        m = trainer.train_step()
        history.append(m)
        # the step's groups: one per question, with the verifier's reward for each rollout
        pass_rates.append([float(np.mean(g["rewards"] > 0.5)) for g in trainer.last_groups])
        print(f"step {m['step']}: NLL {m['nll']:.3f}  pass rate {m['pass_rate/mean']:.2f}  "
              f"gate fraction to SFT {m['gate/sft_frac']:.2f}  RL tokens {m['denominator/rl']:.0f}  "
              f"SFT tokens {m['denominator/sft']:.0f}")
finally:
    trainer.close()
pass_rates = np.asarray(pass_rates)        # [steps, questions]
routed_to_sft = pass_rates <= gamma

# %%
steps = [m["step"] for m in history]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
im = ax1.imshow(pass_rates.T, cmap="viridis", vmin=0, vmax=1, aspect="auto")
for s in range(len(steps)):
    for q in range(pass_rates.shape[1]):
        ax1.text(s, q, "SFT" if routed_to_sft[s, q] else "RL", ha="center", va="center",
                 color="w" if pass_rates[s, q] < 0.5 else "k", fontsize=9)
ax1.set_xticks(range(len(steps)), steps)
ax1.set_xlabel("step")
ax1.set_ylabel("question of the step")
ax1.set_title(f"pass rate P and the gate's route (γ={gamma:g})")
fig.colorbar(im, ax=ax1, label="P")
ax2.plot(steps, [m["gate/sft_frac"] for m in history], "o-", label="fraction routed to SFT")
ax2.plot(steps, [m["pass_rate/mean"] for m in history], "s--", label="mean pass rate")
ax2.set_ylim(-0.05, 1.05)
ax2.set_xlabel("step")
ax2.legend()
ax2.set_title("gate decisions per step")
plt.tight_layout()
plt.show()
print(f"gate fraction to SFT over the run: {routed_to_sft.mean():.2f}")
assert np.allclose(routed_to_sft.mean(1), [m["gate/sft_frac"] for m in history])

# %% [markdown]
# An untrained model solves (almost) nothing, so HPT starts as SFT on the demonstrations; as
# questions start being solved ($P > \gamma$) they switch to RL on their own rollouts. The
# full-size run is `upt train --config experiments/hpt.py` (and `:released_code` for the
# variant of the released code).
