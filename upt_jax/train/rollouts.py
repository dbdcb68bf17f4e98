"""The online-RL stages' first two: rollout and score. ``n`` responses per question from the
sampler with the current parameters, each scored by the verifier, the user's reward functions or
a learned reward model (`Scorer`), grouped per question (`Group`); `draw_groups` repeats the draw
for DAPO's dynamic sampling.

    scorer = Scorer(tok, verifier=Verifier("math"))
    groups = rollouts(sampler, params, scorer, records, prompts, key, sampling_params(config, tok))
    groups, info = draw_groups(lambda r, p, k: rollouts(...), records, prompts, key, q=len(records))
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, TypedDict

import jax
import numpy as np

log = logging.getLogger(__name__)

__all__ = ["Group", "Scorer", "sampling_params", "rollouts", "draw_groups", "new_timing"]


class Group(TypedDict):
    """One question's rollouts (``n`` of them), in sampling order.

    Keys: ``record`` (the training record), ``prompt`` (its token ids), ``rewards`` ``[n]`` float32,
    ``responses`` (``n`` token-id lists), ``logp``, ``sampling_logp``, ``thresholds`` (``n``
    float32 arrays ``[len(response)]``: behaviour log-probs at the policy's temperature, the
    sampled distribution's log-probs, each token's kept-set threshold), ``finished`` (``n`` bools:
    ended with a stop token)."""

    record: dict
    prompt: list[int]
    rewards: np.ndarray
    responses: list[list[int]]
    logp: list[np.ndarray]
    sampling_logp: list[np.ndarray]
    thresholds: list[np.ndarray]
    finished: list[bool]


@dataclasses.dataclass
class Scorer:
    """Rewards of responses: a learned reward model (``learned_reward``: it scores token ids), else
    the user's reward functions (``reward_fns``), else the ``verifier`` against each record's
    ``answer``. Exactly one is used, in that order."""

    tok: Any
    verifier: Any = None
    reward_fns: Any = None
    learned_reward: Any = None

    def __call__(self, records: list[dict], prompts: list[list[int]], responses: list[np.ndarray]):
        """``[len(responses)]`` rewards; ``records[i]``/``prompts[i]`` are response ``i``'s."""
        if self.learned_reward is not None:  # RLHF: a trained reward model scores the rollouts
            return self.learned_reward.scores(prompts, [r.tolist() for r in responses])
        texts = [self.tok.decode(r) for r in responses]
        if self.reward_fns is not None:
            from upt_jax.rewards.functions import prompt_of

            return self.reward_fns.scores([prompt_of(r) for r in records], texts, records)
        return self.verifier.scores(texts, [r["answer"] for r in records])


def sampling_params(config, tok):
    """``config.rollout``'s `SamplingParams` (stopping at the tokenizer's stop ids)."""
    from upt_jax.sampling import SamplingParams

    rc = config.rollout
    return SamplingParams(max_new_tokens=rc.max_new_tokens, temperature=rc.temperature, top_k=rc.top_k,
                          top_p=rc.top_p, n=rc.n, stop_token_ids=tok.stop_ids)


def new_timing() -> dict:
    """The timing counters `rollouts` adds to (seconds)."""
    return dict(rollout_s=0.0, rollout_compile_s=0.0, reward_s=0.0)


def rollouts(sampler, params, scorer: Callable, records: list[dict], prompts: list[list[int]], key: jax.Array,
             sampling, *, chunks: int = 1, executor=None, timing: dict | None = None) -> list[Group]:
    """Sample ``sampling.n`` responses per question with ``params`` and score them: one `Group` per
    question, in order.

    With ``chunks = C > 1`` the questions go in ``C`` chunks (`chunk_bounds`): chunk ``k`` is
    sampled and scored on ``executor`` while chunk ``k + 1`` is sampled (`pipelined_rollouts`).
    Each chunk passes its ``prompt_offset`` and the sampler keys every row by its global index, so
    the tokens do not depend on C. Adds to ``timing`` (`new_timing`): ``rollout_s`` (Σ
    generation), ``rollout_compile_s``, ``reward_s`` (Σ decoding + scoring) and
    ``reward_overlap_s`` (the part of ``reward_s`` hidden behind generation).
    """
    from upt_jax.train.overlap import chunk_bounds, pipelined_rollouts

    timing = new_timing() if timing is None else timing
    bounds = chunk_bounds(len(prompts), chunks)

    def generate(k, ab):
        a, b = ab
        return sampler.generate(prompts[a:b], key, sampling, state=params, prompt_offset=a)

    def score(k, ab, out):
        a, _ = ab
        responses = [out.tokens[i, :out.lengths[i]] for i in range(len(out.lengths))]
        return scorer([records[a + j] for j in out.prompt_index], [prompts[a + j] for j in out.prompt_index],
                      responses)

    results, t = pipelined_rollouts(generate, score, bounds, executor)
    timing["rollout_s"] += t.generate_s
    timing["rollout_compile_s"] += sum(out.compile_s for out, _ in results)
    timing["reward_s"] += t.score_s
    timing["reward_overlap_s"] = timing.get("reward_overlap_s", 0.0) + t.overlap_s
    n, groups = sampling.n, []
    for (a, b), (out, rewards) in zip(bounds, results):
        for j in range(b - a):
            idx = range(j * n, (j + 1) * n)
            groups.append(Group(
                record=records[a + j], prompt=prompts[a + j],
                rewards=np.asarray(rewards[j * n:(j + 1) * n], np.float32),
                responses=[out.tokens[i, :out.lengths[i]].tolist() for i in idx],
                logp=[out.logprobs[i, :out.lengths[i]] for i in idx],
                sampling_logp=[out.sampling_logprobs[i, :out.lengths[i]] for i in idx],
                thresholds=[out.thresholds[i, :out.lengths[i]] for i in idx],
                finished=[bool(out.finished[i]) for i in idx]))
    return groups


def draw_groups(draw: Callable, records: list[dict], prompts: list[list[int]], key: jax.Array, *, q: int,
                dynamic: bool = False, max_draws: int = 1, more: Callable | None = None
                ) -> tuple[list[Group], dict]:
    """The step's ``q`` groups: ``draw(records, prompts, key_i) → groups`` once, or with DAPO's
    dynamic sampling (``dynamic``) again on ``more() → (records, prompts)`` until ``q`` groups
    whose rewards are not all equal (a group without signal) are kept or ``max_draws`` draws were
    made; then topped up with the last draw's signal-free groups (zero advantage). Draw ``i`` uses
    ``fold_in(key, i)``. Returns the groups and ``dynamic_sampling/*`` metrics."""
    groups, info, drawn, tries, last = [], {}, 0, 0, []
    while True:
        last = draw(records, prompts, jax.random.fold_in(key, tries))
        for g in last:
            drawn += 1
            if not dynamic or np.ptp(g["rewards"]) > 0:
                groups.append(g)
        tries += 1
        if len(groups) >= q or tries >= max(1, max_draws):
            break
        records, prompts = more()
    if dynamic:
        info["dynamic_sampling/groups_drawn"] = float(drawn)
        info["dynamic_sampling/kept_frac"] = len(groups) / drawn
        if len(groups) < q:  # out of draws: fill with signal-free groups (zero advantage)
            log.warning("dynamic sampling kept %d of %d groups after %d draws", len(groups), q, tries)
            info["dynamic_sampling/short"] = float(q - len(groups))
            groups += [g for g in last if np.ptp(g["rewards"]) == 0][: q - len(groups)]
    return groups[:q], info
