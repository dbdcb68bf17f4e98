"""The online-RL stages' first two: rollout and score. ``n`` responses per question from the
sampler with the current parameters (`sample` → `Rollouts`), each scored by the verifier, the
user's reward functions or a learned reward model (`score` with a `Scorer` → `ScoredRollouts`, one
`Group` per question); `rollouts` runs both, chunk by chunk with scoring overlapped with
generation; `draw_groups` repeats the draw for DAPO's dynamic sampling.

    scorer = Scorer(tok, verifier=Verifier("math"))
    scored = score(scorer, sample(sampler, params, records, prompts, key, sampling_params(config, tok)))
    scored = rollouts(sampler, params, scorer, records, prompts, key, sampling_params(config, tok))
    scored = draw_groups(lambda r, p, k: rollouts(...), records, prompts, key, q=len(records))
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import jax
import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "Rollouts",
    "Group",
    "ScoredRollouts",
    "Scorer",
    "sampling_params",
    "sample",
    "score",
    "rollouts",
    "draw_groups",
    "new_timing",
]


@dataclasses.dataclass(frozen=True)
class Rollouts:
    """Sampled, not yet scored: ``Q`` questions × ``n`` responses, row ``i · n + j`` the ``j``-th
    response to question ``i``.

    ``records``/``prompts``: the ``Q`` questions (records, token ids); ``responses``: ``Q · n``
    token-id lists; ``logp``, ``sampling_logp``, ``thresholds``: ``Q · n`` float32 arrays
    ``[len(response)]`` (behaviour log-probs at the policy's temperature, the sampled
    distribution's log-probs, each token's kept-set threshold); ``finished``: ``Q · n`` bools
    (ended with a stop token); ``compile_s``: the sampler's compile time."""

    records: Sequence[dict]
    prompts: Sequence[list[int]]
    n: int
    responses: list[list[int]]
    logp: list[np.ndarray]
    sampling_logp: list[np.ndarray]
    thresholds: list[np.ndarray]
    finished: list[bool]
    compile_s: float = 0.0

    def __post_init__(self):
        rows = len(self.records) * self.n
        if len(self.prompts) != len(self.records) or any(
            len(x) != rows for x in (self.responses, self.logp, self.sampling_logp, self.thresholds, self.finished)
        ):
            raise ValueError(
                f"Rollouts: {len(self.records)} records, {len(self.prompts)} prompts and n={self.n} "
                f"need {rows} responses, log-probs, thresholds and finished flags each"
            )


@dataclasses.dataclass(frozen=True, eq=False)
class Group(Mapping):
    """One question's scored rollouts (``n`` of them), in sampling order; read as a mapping too
    (``group["rewards"]``).

    ``record`` (the training record), ``prompt`` (its token ids), ``rewards`` ``[n]`` float32,
    ``responses`` (``n`` token-id lists), ``logp``, ``sampling_logp``, ``thresholds`` (``n``
    float32 arrays ``[len(response)]``, as in `Rollouts`), ``finished`` (``n`` bools)."""

    record: dict
    prompt: list[int]
    rewards: np.ndarray
    responses: list[list[int]]
    logp: list[np.ndarray]
    sampling_logp: list[np.ndarray]
    thresholds: list[np.ndarray]
    finished: list[bool]

    def __getitem__(self, key: str):
        if key not in _GROUP_FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(_GROUP_FIELDS)

    def __len__(self) -> int:
        return len(_GROUP_FIELDS)


_GROUP_FIELDS = tuple(f.name for f in dataclasses.fields(Group))


@dataclasses.dataclass(frozen=True, eq=False)
class ScoredRollouts(Sequence):
    """A step's scored rollouts: a sequence of `Group` s (one per question, in order) and the
    draw's host metrics ``info`` (``dynamic_sampling/*``)."""

    groups: tuple[Group, ...]
    info: dict = dataclasses.field(default_factory=dict)

    def __getitem__(self, i):
        return self.groups[i]

    def __len__(self) -> int:
        return len(self.groups)


@dataclasses.dataclass
class Scorer:
    """Rewards of responses: a learned reward model (``learned_reward``: it scores token ids), else
    the user's reward functions (``reward_fns``), else the ``verifier`` against each record's
    ``answer`` (with the record's own verifier kind when it names one: a task family's, such as
    ``countdown``; `upt_jax.rewards.Verifier`). Exactly one is used, in that order."""

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
        return verifier_scores(self.verifier, texts, records)


def verifier_scores(verifier, texts: list[str], records: list[dict]) -> np.ndarray:
    """``verifier``'s scores of ``texts`` against their ``records``' answers, each record scored by
    the verifier kind it names (its task family's), else by ``verifier``'s own."""
    answers = [r["answer"] for r in records]
    kinds, own = [r.get("verifier") for r in records], getattr(verifier, "kind", None)
    if own is None or all(k in (None, own) for k in kinds):  # one kind (or a stand-in): the plain call
        return verifier.scores(texts, answers)
    return verifier.scores(texts, answers, kinds)


def sampling_params(config, tok):
    """``config.rollout``'s `SamplingParams` (stopping at the tokenizer's stop ids)."""
    from upt_jax.sampling import SamplingParams

    rc = config.rollout
    return SamplingParams(
        max_new_tokens=rc.max_new_tokens,
        temperature=rc.temperature,
        top_k=rc.top_k,
        top_p=rc.top_p,
        n=rc.n,
        stop_token_ids=tok.stop_ids,
    )


def new_timing() -> dict:
    """The timing counters `rollouts` adds to (seconds)."""
    return dict(rollout_s=0.0, rollout_compile_s=0.0, reward_s=0.0)


def sample(
    sampler,
    params,
    records: Sequence[dict],
    prompts: Sequence[list[int]],
    key: jax.Array,
    sampling,
    *,
    prompt_offset: int = 0,
    min_prompt_len: int = 0,
) -> Rollouts:
    """The rollout stage: ``sampling.n`` responses to each of ``prompts`` sampled with ``params``
    (the sampler keys each row by its global index ``prompt_offset + i``, so a question's tokens
    do not depend on how the questions are chunked; ``min_prompt_len``: the run's prompt bucket
    floor, `upt_jax.train.shapes`)."""
    out = sampler.generate(
        prompts, key, sampling, state=params, prompt_offset=prompt_offset, min_prompt_len=min_prompt_len
    )
    rows = range(len(out.lengths))
    return Rollouts(
        records=list(records),
        prompts=list(prompts),
        n=sampling.n,
        responses=[out.tokens[i, : out.lengths[i]].tolist() for i in rows],
        logp=[out.logprobs[i, : out.lengths[i]] for i in rows],
        sampling_logp=[out.sampling_logprobs[i, : out.lengths[i]] for i in rows],
        thresholds=[out.thresholds[i, : out.lengths[i]] for i in rows],
        finished=[bool(out.finished[i]) for i in rows],
        compile_s=out.compile_s,
    )


def score(scorer: Callable, rollouts: Rollouts, rewards: np.ndarray | None = None) -> ScoredRollouts:
    """The score stage: ``rollouts`` grouped per question with their rewards, from ``scorer``
    (`Scorer`: ``scorer(records, prompts, responses) → [Q · n]``) or given as ``rewards``."""
    n, q = rollouts.n, len(rollouts.records)
    if rewards is None:
        idx = [i // n for i in range(q * n)]
        rewards = scorer(
            [rollouts.records[i] for i in idx],
            [rollouts.prompts[i] for i in idx],
            [np.asarray(r, np.int32) for r in rollouts.responses],
        )
    groups = []
    for j in range(q):
        s = slice(j * n, (j + 1) * n)
        groups.append(
            Group(
                record=rollouts.records[j],
                prompt=rollouts.prompts[j],
                rewards=np.asarray(rewards[s], np.float32),
                responses=rollouts.responses[s],
                logp=rollouts.logp[s],
                sampling_logp=rollouts.sampling_logp[s],
                thresholds=rollouts.thresholds[s],
                finished=rollouts.finished[s],
            )
        )
    return ScoredRollouts(tuple(groups))


def rollouts(
    sampler,
    params,
    scorer: Callable,
    records: list[dict],
    prompts: list[list[int]],
    key: jax.Array,
    sampling,
    *,
    chunks: int = 1,
    executor=None,
    timing: dict | None = None,
    min_prompt_len: int = 0,
) -> ScoredRollouts:
    """`sample` and `score`: ``sampling.n`` responses per question with ``params``, scored, one
    `Group` per question, in order.

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
        return sample(
            sampler, params, records[a:b], prompts[a:b], key, sampling, prompt_offset=a, min_prompt_len=min_prompt_len
        )

    results, t = pipelined_rollouts(generate, lambda k, ab, r: score(scorer, r), bounds, executor)
    timing["rollout_s"] += t.generate_s
    timing["rollout_compile_s"] += sum(r.compile_s for r, _ in results)
    timing["reward_s"] += t.score_s
    timing["reward_overlap_s"] = timing.get("reward_overlap_s", 0.0) + t.overlap_s
    return ScoredRollouts(tuple(g for _, scored in results for g in scored))


def draw_groups(
    draw: Callable,
    records: list[dict],
    prompts: list[list[int]],
    key: jax.Array,
    *,
    q: int,
    dynamic: bool = False,
    max_draws: int = 1,
    more: Callable | None = None,
) -> ScoredRollouts:
    """The step's ``q`` groups: ``draw(records, prompts, key_i) → groups`` once, or with DAPO's
    dynamic sampling (``dynamic``) again on ``more() → (records, prompts)`` until ``q`` groups
    whose rewards are not all equal (a group without signal) are kept or ``max_draws`` draws were
    made; then topped up with the last draw's signal-free groups (zero advantage). Draw ``i`` uses
    ``fold_in(key, i)`` (the first too). Returns the groups with ``dynamic_sampling/*`` metrics as
    their ``info``."""
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
    return ScoredRollouts(tuple(groups[:q]), info)
