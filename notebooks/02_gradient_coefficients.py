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
# # Per-token gradient coefficients of SFT, GRPO, LUFFY and HPT
#
# Each method's gradient is $\sum_{i,t} c_{i,t}\,\nabla\log\pi_\theta(o_{i,t})$; the
# coefficient $c_{i,t} = \partial L / \partial \log\pi_\theta(o_{i,t})$ holds everything that
# differs between methods (mask, reference, advantage, aggregation, gate). We compute it with
# `jax.grad` of each recipe's loss with respect to the token log-probs, on **one batch**:
# 3 questions, each with 3 on-policy rollouts and 1 demonstration (the group's last row).
# Negative coefficients (blue) raise the token's probability under gradient descent.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import upt_jax.upge as upge

Q, N, T = 3, 3, 8           # questions, rollouts per question, tokens per response
G = N + 1                   # a group: N rollouts + 1 demonstration
B = Q * G
rng = np.random.default_rng(0)
rollout_rewards = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]], np.float32)  # solved, hard, unsolved
rewards = np.concatenate([rollout_rewards, np.ones((Q, 1), np.float32)], 1).reshape(B)
is_demo = np.tile([False] * N + [True], Q)
lengths = rng.integers(3, T + 1, B)
lengths[is_demo] = T        # demonstrations are the longest
mask = (np.arange(T)[None] < lengths[:, None]).astype(np.float32)
logp = np.log(rng.uniform(0.05, 0.95, (B, T))).astype(np.float32) * mask
old_logp = np.where(is_demo[:, None], 0.0, logp)  # on-policy rollouts; demos: behaviour unknown
batch = dict(mask=mask, rewards=rewards, old_logp=old_logp, is_demo=is_demo)
labels = [f"q{i // G} " + ("demo" if is_demo[i] else f"r={rewards[i]:.0f}") for i in range(B)]


def coefficients(recipe, batch):
    prepared, _ = upge.prepare(recipe, batch, group_size=G)
    dens = upge.denominators(recipe, prepared, group_size=G)

    def loss(lp):
        sums, _, _ = upge.compute_loss(recipe, lp, prepared, group_size=G)
        return upge.normalise(sums, dens)

    return np.asarray(jax.grad(loss)(jnp.asarray(logp)))


# SFT trains on the demonstrations only: they are its rows (plain rows, not "demo" rows)
sft_batch = dict(batch, mask=mask * is_demo[:, None], is_demo=np.zeros(B, bool))
coef = {
    "SFT": coefficients(upge.get_recipe("sft"), sft_batch),
    "GRPO": coefficients(upge.get_recipe("grpo"), batch),
    "LUFFY": coefficients(upge.get_recipe("luffy"), batch),
    "HPT (γ=0)": coefficients(upge.get_recipe("hpt", gamma=0.0), batch),
}
for name, c in coef.items():
    per_row = (c * mask).sum(1)
    print(f"{name:10s} Σ_t c per row: " + " ".join(f"{x:+.3f}" for x in per_row))

# %%
vmax = max(np.abs(c).max() for c in coef.values())
fig, axes = plt.subplots(1, len(coef), figsize=(4 * len(coef), 4.2), sharey=True)
for ax, (name, c) in zip(axes, coef.items()):
    shown = np.where(mask > 0, c, np.nan)
    im = ax.imshow(shown, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
    ax.set_title(name)
    ax.set_xlabel("token t")
    for q in range(1, Q):
        ax.axhline(q * G - 0.5, color="k", lw=0.8)
axes[0].set_yticks(range(B), labels)
fig.colorbar(im, ax=axes, label="∂L/∂log π(o_t)", shrink=0.8)
fig.suptitle("Per-token gradient coefficients on one batch (blank: padding)")
plt.show()

# %% [markdown]
# What the heat map shows:
#
# * **SFT**: the same negative coefficient on every demonstration token (token-mean NLL) and
#   nothing on rollouts.
# * **GRPO**: rollouts only; within a group, correct answers pushed up and wrong ones down;
#   the unsolved question (all rewards 0) contributes nothing — zero advantage.
# * **LUFFY**: the demonstration joins the group's advantage normalisation, so even the unsolved
#   question gets signal; demo tokens are weighted by the policy shaping
#   $f'(\pi) = \gamma/(\pi+\gamma)^2 \cdot \pi$, largest on low-probability tokens.
# * **HPT**: a per-question switch: solved questions (pass rate $P > \gamma$) train RL on their
#   rollouts, the unsolved one trains SFT on its demonstration.

# %%
P = rollout_rewards.mean(1)
for q in range(Q):
    print(f"HPT gate: q{q} pass rate P={P[q]:.2f} -> {'RL on rollouts' if P[q] > 0 else 'SFT on the demo'}")
hpt = coef["HPT (γ=0)"]
assert np.all(hpt[is_demo & (np.repeat(P, G) > 0)] == 0) and np.any(hpt[is_demo & (np.repeat(P, G) == 0)] != 0)
