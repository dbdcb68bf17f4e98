"""Trained reward models as scorers inside the loop: `load_reward_model` rebuilds one from its run
directory, `LearnedReward` scores whole rollouts with an outcome reward model (RLHF, in place of a
verifier) and `ProcessReward` scores each step of a rollout with a process reward model.

Training them is `upt_jax.train.reward_model` (``mode=reward_model``) and `upt_jax.train.prm`
(``mode=prm``, its objective); both re-export what they name from here, and neither is imported
by this module, so a run that only scores with a reward model does not load the reward-model trainer.
"""

from __future__ import annotations

import json
import threading

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx

__all__ = ["load_reward_model", "LearnedReward", "ProcessReward", "step_ends"]


def load_reward_model(run_dir: str):
    """``(graphdef, params)`` of a ``RewardModel`` trained in ``run_dir`` (``reward_model`` or
    ``prm`` mode): rebuilt from its ``config.json``, parameters from its latest usable checkpoint."""
    import ml_collections

    from upt_jax.data import load_tokenizer
    from upt_jax.models.reward import reward_model_from
    from upt_jax.train.checkpoint import abstract_with_shardings, restore_params
    from upt_jax.train.model_source import build_model

    cfg_file = epath.Path(run_dir) / "config.json"  # local or gs://
    if not cfg_file.is_file():
        raise FileNotFoundError(
            f"reward model run {run_dir!r} has no config.json (train one with "
            "experiments/reward_model.py or experiments/prm.py)"
        )
    rm_config = ml_collections.ConfigDict(json.loads(cfg_file.read_text()))
    tok = load_tokenizer(rm_config.tokenizer)
    special = dict(eos_token_id=tok.eos_id, bos_token_id=tok.bos_id, pad_token_id=tok.pad_id)
    model = reward_model_from(build_model(rm_config.model, vocab_size=tok.vocab_size, special=special))
    graphdef, state = nnx.split(model)
    return graphdef, restore_params(str(epath.Path(run_dir) / "checkpoints"), abstract_with_shardings(state))


class LearnedReward:
    """Scores rollouts with a trained reward model (RLHF), in place of a verifier.

    Args:
      run_dir: a ``reward_model`` run directory (its ``config.json`` and latest checkpoint).
      normalize: ``none``; ``batch`` (whiten the step's scores: zero mean, unit std); or
        ``running`` (subtract/divide by running mean and std over all scores seen so far).
      pad_id: the tokenizer's pad id.
    """

    def __init__(self, run_dir: str, *, pad_id: int, normalize: str = "none"):
        if normalize not in ("none", "batch", "running"):
            raise ValueError(f"reward.normalize must be none, batch or running, not {normalize!r}")
        graphdef, params = load_reward_model(run_dir)
        self.params, self.graphdef = params, graphdef
        self.pad_id, self.normalize = pad_id, normalize
        self._fn = jax.jit(lambda p, tokens, attn: nnx.merge(graphdef, p)(tokens, attn))
        self._n, self._mean, self._m2 = 0, 0.0, 0.0
        self._logged: list[np.ndarray] = []  # raw scores since the last `metrics` call
        self._lock = threading.Lock()  # scores may come from the trainer's scoring thread

    def raw_scores(self, prompts, responses) -> np.ndarray:
        """``[B]`` reward-model scores of ``prompt_i ⧺ response_i`` (token-id lists)."""
        from upt_jax.train.batching import pack_rows

        rows = pack_rows(prompts, responses, pad_id=self.pad_id)
        return np.asarray(
            self._fn(self.params, jnp.asarray(rows["tokens"]), jnp.asarray(rows["attention_mask"])), np.float32
        )

    def scores(self, prompts, responses) -> np.ndarray:
        """Normalised scores as configured."""
        r = self.raw_scores(prompts, responses)
        with self._lock:
            self._logged.append(r)
        if self.normalize == "batch":
            return ((r - r.mean()) / (r.std() + 1e-6)).astype(np.float32)
        if self.normalize == "running":  # Welford over every score seen so far
            for x in r:
                self._n += 1
                d = x - self._mean
                self._mean += d / self._n
                self._m2 += d * (x - self._mean)
            std = (self._m2 / max(self._n - 1, 1)) ** 0.5
            return ((r - self._mean) / (std + 1e-6)).astype(np.float32)
        return r

    def metrics(self, prefix: str = "reward/") -> dict[str, float]:
        """Since the last call: ``reward/model_score`` and ``reward/model_score_std``, the mean and
        standard deviation of the raw (unnormalised) scores; then reset. With ``normalize`` the
        rewards the policy sees have mean 0 every step, so only these show whether training raises
        the learned reward."""
        with self._lock:
            r, self._logged = (np.concatenate(self._logged) if self._logged else None), []
        if r is None or not r.size:
            return {}
        return {f"{prefix}model_score": float(r.mean()), f"{prefix}model_score_std": float(r.std())}


def step_ends(tokens: np.ndarray, mask: np.ndarray, newline_id: int) -> np.ndarray:
    """``[B, T]`` 1 at each step's last response token: newlines, and the last response token."""
    m = mask > 0
    ends = (tokens == newline_id) & m
    idx = np.arange(mask.shape[1])[None, :]
    last = np.max(np.where(m, idx, -1), axis=1)
    rows = np.nonzero(last >= 0)[0]
    ends[rows, last[rows]] = True
    return ends.astype(np.float32)


class ProcessReward:
    """A trained PRM (``experiments/prm.py``) scoring the steps of rollouts inside the loop.

    ``step_rewards(rows)`` → ``(step_rewards, step_mask)`` ``[B, T]``: the PRM's probability that
    each step is correct, placed at the step's last token (for the ``grpo_process`` recipe).
    """

    def __init__(self, run_dir: str, *, newline_id: int):
        graphdef, self.params = load_reward_model(run_dir)
        self.newline_id = newline_id
        self._fn = jax.jit(lambda p, tokens, attn: nnx.merge(graphdef, p).token_scores(tokens, attn))

    def step_rewards(self, rows: dict) -> tuple[np.ndarray, np.ndarray]:
        logits = np.asarray(self._fn(self.params, jnp.asarray(rows["tokens"]), jnp.asarray(rows["attention_mask"])))
        ends = step_ends(np.asarray(rows["tokens"]), np.asarray(rows["mask"]), self.newline_id)
        probs = 1.0 / (1.0 + np.exp(-logits))
        return (probs * ends).astype(np.float32), ends
