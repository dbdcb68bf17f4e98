# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Compose a new loss from the UPGE parts
#
# Every loss in upt_jax is one surrogate,
# $L = -\sum_t w_t\, \mathrm{sg}(1_{stable}\,\hat A_t)\, \exp(\log\pi_\theta - \mathrm{sg}\log\pi_{ref})$,
# with four interchangeable parts (stabiliser, reference, advantage, aggregation).
# Here we build a loss no paper names — **RLOO advantages + DAPO's clip-higher + GRPO's
# sequence-mean aggregation** — in a few lines, and check its gradient against the same loss
# written by hand the textbook way.

# %%
import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"  # before jax starts (part 2)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax
import jax.numpy as jnp
import numpy as np

import upt_jax.upge as upge

recipe = upge.Recipe("rloo_clip_higher", (upge.Term("pg", rollout=upge.Parts(
    stabiliser=(upge.part("ppo_clip", eps_low=0.2, eps_high=0.28),),
    reference=upge.part("behaviour"),
    advantage=upge.part("rloo"),
    aggregation=upge.part("seq-mean-token-mean"))),))
print(recipe)

# %% [markdown]
# A toy batch: 3 questions × 4 rollouts, ragged responses of up to 6 tokens over a vocabulary
# of 11. The policy is a table of logits `theta [B, T, V]`; the behaviour log-probs are the
# policy's own, perturbed so that some ratios fall outside the clip range.

# %%
G, Q, T, V = 4, 3, 6, 11
B = G * Q
k = jax.random.split(jax.random.key(0), 5)
theta = jax.random.normal(k[0], (B, T, V))
tokens = jax.random.randint(k[1], (B, T), 0, V)
lengths = jax.random.randint(k[2], (B,), 2, T + 1)
mask = (jnp.arange(T)[None] < lengths[:, None]).astype(jnp.float32)
rewards = jax.random.bernoulli(k[3], 0.5, (B,)).astype(jnp.float32)


def token_logp(theta):
    """log π_θ(o_t) of the sampled tokens, ``[B, T]``."""
    return jnp.take_along_axis(jax.nn.log_softmax(theta), tokens[..., None], -1)[..., 0]


old_logp = jax.lax.stop_gradient(token_logp(theta)) + 0.3 * jax.random.normal(k[4], (B, T))
batch = dict(mask=mask, rewards=rewards, old_logp=old_logp)
ratio = jnp.exp(token_logp(theta) - old_logp)
print("rewards by question:\n", rewards.reshape(Q, G))
print(f"tokens with the ratio outside [0.8, 1.28]: {int(jnp.sum(((ratio < 0.8) | (ratio > 1.28)) * mask))}"
      f" of {int(mask.sum())}")

# %% [markdown]
# **UPGE**: `prepare` (advantages, on the whole batch) → `denominators` → `compute_loss` (sums)
# → `normalise`. **Textbook**: leave-one-out advantage, the PPO min/clip objective, mean over
# tokens of each sequence, then over sequences.

# %%
prepared, _ = upge.prepare(recipe, batch, group_size=G)
dens = upge.denominators(recipe, prepared, group_size=G)


def upge_loss(theta):
    sums, _, _ = upge.compute_loss(recipe, token_logp(theta), prepared, group_size=G)
    return upge.normalise(sums, dens)


def textbook_loss(theta):
    r = rewards.reshape(Q, G)
    adv = (r - (r.sum(1, keepdims=True) - r) / (G - 1)).reshape(B, 1)   # r_i − mean_{j≠i} r_j
    ratio = jnp.exp(token_logp(theta) - old_logp)
    per_token = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - 0.2, 1 + 0.28) * adv)
    per_seq = jnp.sum(per_token * mask, 1) / jnp.sum(mask, 1)
    return jnp.mean(per_seq)


g_upge = jax.jit(jax.grad(upge_loss))(theta)
g_book = jax.jit(jax.grad(textbook_loss))(theta)
max_diff = float(jnp.max(jnp.abs(g_upge - g_book)))
print(f"loss: upge {float(upge_loss(theta)):+.6f}   textbook {float(textbook_loss(theta)):+.6f}")
print(f"gradient norm {float(jnp.linalg.norm(g_book)):.4f}; max |grad difference| = {max_diff:.3e}")
assert max_diff < 1e-6

# %% [markdown]
# The values differ (the surrogate's value is not the textbook loss's value; the gradient is
# the contract), the gradients agree to float precision. Swapping any one
# part — `upge.part("cispo", eps_high=0.28)`, `upge.part("dr_grpo")`,
# `upge.part("token-mean")` — gives another valid estimator with no new code.

# %% [markdown]
# ## Part 2: a recipe of your own, trained, killed and resumed by `upt train`
#
# A recipe is a value: train it with `Trainer(config, recipe=recipe)`. The run directory records
# it as plain data (`recipe.json`, with the import path of any part you registered), so a new
# process — `upt train`, knowing only the recipe's name — rebuilds it and resumes the run.
#
# First, a part the library does not have, in a module of your own (a module, not a notebook
# cell: the process that resumes the run imports it again). `rloo_brevity` is the leave-one-out
# advantage of a length-penalised reward, $\hat A_i = \tilde r_i - \mathrm{mean}_{j \ne i}\,\tilde r_j$
# with $\tilde r_i = r_i - c\,|y_i|/T$: among a question's rollouts, the shorter ones gain.

# %%
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

work = Path(tempfile.mkdtemp(prefix="compose_notebook_"))
(work / "my_parts.py").write_text('''"""My parts: importing this module registers them."""
import jax.numpy as jnp

from upt_jax import upge


def rloo_brevity(c, coef=0.5):
    """Leave-one-out advantage of the reward minus coef · (response length / T), [B]."""
    shaped = c.rewards - coef * jnp.sum(c.mask, axis=-1) / c.mask.shape[-1]
    return upge.rloo_advantages(shaped, c.group_size, row_mask=c.rows)


upge.register_advantage("rloo_brevity", rloo_brevity, needs=upge.Needs(batch=("rewards",), groups=2))
''')
sys.path.insert(0, str(work))  # this kernel imports it ...
os.environ["PYTHONPATH"] = os.pathsep.join(  # ... and so do the processes started below
    p for p in [str(work), os.environ.get("PYTHONPATH")] if p)
import my_parts  # noqa: F401  (registers "rloo_brevity")

# %% [markdown]
# The recipe: GRPO's clip, behaviour reference and sequence-mean aggregation, plus truncated
# importance sampling (`tis`, weights capped at 2), an entropy bonus, and the new advantage.
# Its plain-data form names the user's part by import path.

# %%
mine = upge.Recipe("grpo_tis_entropy_brevity", (upge.Term("pg", rollout=upge.Parts(
    stabiliser=(upge.part("ppo_clip", eps_low=0.2, eps_high=0.2), upge.part("tis", cap=2.0)),
    reference=upge.part("behaviour"),
    advantage=upge.part("rloo_brevity", coef=0.5),
    aggregation=upge.part("seq-mean-token-mean")), entropy_coef=0.01),))
print(mine)
record = upge.recipe_to_dict(mine)
print(json.dumps(record["terms"][0]["rollout"]["advantage"]))

# %% [markdown]
# The reference run, uninterrupted, in this kernel: GRPO's experiment with a tiny random model
# (1 layer, hidden 32) on the synthetic addition task, 5 steps of 2 questions × 2 rollouts,
# a checkpoint every step. The same command line configures every run below.

# %%
from upt_jax.cli import load_config
from upt_jax.train import Trainer
from upt_jax.train.metrics_log import read_metrics
from upt_jax.train.run_model import model_from_run

STEPS = 5
ARGS = ["--config", "grpo", f"--config.train.steps={STEPS}", "--config.train.questions_per_step=2",
        "--config.rollout.n=2", "--config.rollout.max_new_tokens=8", "--config.data.tiers=('add_2',)",
        "--config.data.n_per_tier=64", "--config.model.overrides.num_layers=1",
        "--config.model.overrides.hidden_size=32", "--config.model.overrides.intermediate_size=64",
        "--config.model.overrides.num_heads=2", "--config.model.overrides.num_kv_heads=1",
        "--config.model.overrides.head_dim=16", "--config.mesh.data=1", "--config.mesh.fsdp=1",
        "--config.mesh.tensor=1", "--config.checkpoint.every=1", "--config.log.progress=False"]
ref_dir, crash_dir = work / "reference", work / "killed"

trainer = Trainer(load_config([*ARGS, f"--config.run_dir={ref_dir}"]), recipe=mine)
try:
    history = trainer.run()
finally:
    trainer.close()
for m in history:
    print(f"step {m['step']}: loss {m['loss']:+.6f}  entropy {m['entropy']:.3f}  grad norm {m['grad_norm']:.4f}")

# %% [markdown]
# The same run in a process of its own (it rebuilds the recipe from its plain data), killed with
# SIGKILL — no chance to save anything — as soon as its first checkpoint is committed.

# %%
TRAIN = """
import json, sys
from upt_jax import upge
from upt_jax.cli import load_config
from upt_jax.train import Trainer
trainer = Trainer(load_config(sys.argv[2:]), recipe=upge.recipe_from_dict(json.loads(sys.argv[1])))
trainer.run()
trainer.close()
"""


def committed_steps(run_dir):
    """The checkpoint steps Orbax has committed (a save in progress has a temporary name)."""
    d = Path(run_dir) / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


with open(work / "killed.log", "w") as log:
    child = subprocess.Popen([sys.executable, "-c", TRAIN, json.dumps(record), *ARGS,
                              f"--config.run_dir={crash_dir}"], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 110
    while not committed_steps(crash_dir) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
assert child.returncode == -signal.SIGKILL and committed_steps(crash_dir), (work / "killed.log").read_text()[-3000:]
print(f"killed (SIGKILL) with step {committed_steps(crash_dir)[-1]} of {STEPS} committed")

# %% [markdown]
# Resume it with `upt train` in a new process. Its command line names the recipe only:
# `upt train` finds `grpo_tis_entropy_brevity` in the run directory's `recipe.json` and imports
# `my_parts` to rebuild it.

# %%
resume = subprocess.run([sys.executable, "-m", "upt_jax.cli", "train", *ARGS, f"--config.run_dir={crash_dir}",
                         f"--config.recipe.name={mine.name}"], capture_output=True, text=True, timeout=110)
assert resume.returncode == 0, resume.stderr[-3000:]
print(next(line for line in resume.stderr.splitlines() if "resumed" in line))
print("upt train:", resume.stdout.strip().splitlines()[-1])

# %% [markdown]
# Both runs end with the same parameters, bit for bit, and logged the same loss at every step.

# %%
from flax import nnx

ref_model, ref_step = model_from_run(ref_dir, key="reference")
crash_model, crash_step = model_from_run(crash_dir, key="killed")
a, b = jax.tree.leaves(nnx.state(ref_model)), jax.tree.leaves(nnx.state(crash_model))
same = len(a) == len(b) and all(np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(a, b))
print(f"final step: reference {ref_step}, killed and resumed {crash_step}")
print(f"parameters bitwise equal: {same} ({len(a)} leaves)")
ref_losses = [m["loss"] for m in read_metrics(str(ref_dir))]
crash_losses = [m["loss"] for m in read_metrics(str(crash_dir))]
print(f"losses equal: {ref_losses == crash_losses} ({len(crash_losses)} steps)")
assert same and ref_losses == crash_losses
