"""Sample ``k`` answers per question, verify them, and report avg@k and pass@j per suite.

A *suite* is a named list of records (``{"question", "answer", "verifier", ...}``): a
synthetic tier, or a bundled benchmark. For every suite::

    prompts  = tokenizer(render_prompt(question, template) + separator(template))   (as in training)
    samples  = Sampler.generate(prompts, key_b, SamplingParams(n=k, ...))           [Q·k, L]
    correct  = verifier[record["verifier"]](decode(sample), record["answer"])        [Q, k]
    avg@k    = mean(correct);   pass@j = mean_q  1 − C(k − c_q, j)/C(k, j)           (j ≤ k)

Questions are batched (``batch_questions`` per ``generate`` call, each with its ``k``
samples). The key of batch ``b`` of suite ``s`` is
``fold_in(fold_in(key, crc32(s)), b)``, so a suite's numbers depend only on the key, the
suite's name and records, ``batch_questions`` and the sampling settings: the same key gives
the same numbers, whichever other suites are evaluated with it.

Each record is scored by the verifier kind it carries (``integer`` for the synthetic tiers,
``math`` or ``choice`` for the benchmarks) through one `RoutedVerifier` (math answers in its
time-limited worker pool); reasons (``correct``, ``wrong``, ``no_answer``, ``timeout``, ...)
are counted per suite.

Example::

  from upt_jax.eval import evaluate, synthetic_suites
  results = evaluate(model, tok, synthetic_suites(["add_2", "add_8"], n=100), k=8,
                     temperature=1.0, max_new_tokens=512, key=jax.random.key(0))
  results["add_2"].avg_at_k, results["add_2"].pass_at_k[8]
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
import zlib
from typing import Any, Mapping, Sequence

import numpy as np

from upt_jax.eval import metrics

log = logging.getLogger(__name__)

__all__ = ["SuiteResult", "evaluate", "synthetic_suites", "benchmark_suites", "DEFAULT_EVAL_SEED", "suite_key"]

# Synthetic evaluation questions are drawn with this seed, not the training default (0), so
# that they are a fresh draw rather than the first items of the training stream.
DEFAULT_EVAL_SEED = 1_000_003


@dataclasses.dataclass
class SuiteResult:
    """The evaluation of one suite.

    Attributes:
      name: the suite's name.
      k: samples per question.
      num_questions: ``Q``.
      avg_at_k: mean accuracy over all ``Q · k`` samples.
      pass_at_k: ``{j: unbiased pass@j}`` for the requested ``j ≤ k``.
      mean_response_length: mean generated tokens per sample (stop token included).
      truncated_frac: fraction of samples that hit ``max_new_tokens`` without a stop token.
      reasons: ``{reason: count}`` over all samples (``correct``, ``wrong``, ``no_answer``,
        ``too_long``, ``timeout``, ``worker_died``, ``error``).
      correct_counts: ``[Q]`` correct samples per question.
      ids: ``[Q]`` record ids.
      examples: a few ``{"id", "question", "answer", "output", "reason"}`` for inspection.
      seconds: wall time spent sampling and verifying this suite.
      best_of_k: accuracy when a scorer (e.g. a trained reward model) picks one of the ``k``
        samples per question (best-of-n); ``None`` without a scorer.
    """

    name: str
    k: int
    num_questions: int
    avg_at_k: float
    pass_at_k: dict[int, float]
    mean_response_length: float
    truncated_frac: float
    reasons: dict[str, int]
    correct_counts: list[int]
    ids: list[str]
    examples: list[dict] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    best_of_k: float | None = None
    mean_reward: float | None = None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["pass_at_k"] = {str(j): v for j, v in self.pass_at_k.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SuiteResult":
        """Inverse of `to_dict`, also after JSON (where NaN was written as null)."""
        num = lambda v: float("nan") if v is None else float(v)  # noqa: E731
        d = dict(d)
        d["pass_at_k"] = {int(j): num(v) for j, v in d["pass_at_k"].items()}
        for f in ("avg_at_k", "mean_response_length", "truncated_frac"):
            d[f] = num(d[f])
        return cls(**d)


def suite_key(key, name: str):
    """The key of suite ``name``: ``fold_in(key, crc32(name))`` (stable across processes)."""
    import jax

    return jax.random.fold_in(key, zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF)


def synthetic_suites(
    tiers: Sequence[str] | None = None, n: int = 100, seed: int = DEFAULT_EVAL_SEED
) -> dict[str, list[dict]]:
    """``{tier: n records}`` of registered task tiers (`upt_jax.data.tasks`; default: the built-in
    ``arith`` family's train + OOD tiers; ``"module:tier"`` imports a user's family first).

    Records carry their family's verifier. ``seed`` defaults to `DEFAULT_EVAL_SEED`, a draw
    apart from the training stream (small tiers such as ``add_2`` have few distinct
    questions, so some overlap with training questions is still expected there).
    """
    from upt_jax.data import synthetic, tasks

    tiers = tuple(synthetic.TRAIN_TIERS + synthetic.OOD_TIERS) if tiers is None else tuple(tiers)
    names = [tasks.resolve_tier(t) for t in tiers]
    return {t: tasks.generate(t, n, seed) for t in names}


def benchmark_suites(names: Sequence[str] | None = None, limit: int | None = None) -> dict[str, list[dict]]:
    """``{benchmark: records}`` of the bundled benchmarks (default: all), each cut to its
    first ``limit`` items when given. Records carry ``verifier="math"`` or ``"choice"``."""
    from upt_jax.data import benchmark_names, load_benchmark

    names = benchmark_names() if names is None else names
    out = {}
    for name in names:
        records = load_benchmark(name)
        out[records[0]["benchmark"] if records else name] = records[:limit] if limit else records
    return out


def eval_prompt_ids(tokenizer, question: str, template: str, system_prompt: str | None) -> list[int]:
    """The prompt exactly as the trainer builds it (``upt_jax.data.templates.prompt_ids``)."""
    from upt_jax.data.templates import prompt_ids

    return prompt_ids(tokenizer, question, template, system_prompt=system_prompt)


def _score(verifier, reward_fns, records, texts, default_verifier: str) -> list:
    """One `Reward` per sample: the verifier of each record's kind, or ``reward_fns``' weighted
    sum (reason ``correct`` when > 0.5, else ``wrong``; a failed call is counted by ``reward_fns``)."""
    from upt_jax.rewards import Reward

    if reward_fns is None:
        kinds = [r.get("verifier") or default_verifier for r in records]
        return verifier(texts, [r["answer"] for r in records], kinds)
    from upt_jax.rewards.functions import prompt_of

    scores = reward_fns.scores([prompt_of(r) for r in records], texts, records)
    return [Reward(float(x), "correct" if x > 0.5 else "wrong") for x in scores]


def evaluate(
    model,
    tokenizer,
    suites: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    k: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    max_new_tokens: int = 512,
    key=None,
    template: str = "zero",
    system_prompt: str | None = None,
    params=None,
    batch_questions: int = 64,
    pass_ks: Sequence[int] | None = None,
    default_verifier: str = "math",
    verifier=None,
    timeout_s: float = 5.0,
    num_workers: int | None = None,
    sampler=None,
    num_examples: int = 3,
    progress: bool = False,
    scorer=None,
    reward_fns=None,
    completions: list | None = None,
) -> dict[str, SuiteResult]:
    """Evaluate ``model`` on every suite: ``k`` samples per question, verified.

    Args:
      model: a ``Transformer`` (ignored when ``sampler`` is given).
      tokenizer: a `upt_jax.data.Tokenizer` (prompts, decoding, pad and stop ids).
      suites: ``{name: records}``; each record needs ``question`` and ``answer``, and
        ``verifier`` (else ``default_verifier``).
      k: samples per question (``SamplingParams.n``).
      temperature, top_p, top_k, max_new_tokens: sampling settings (``temperature=0``:
        greedy, which makes the ``k`` samples identical).
      key: PRNG key (default ``jax.random.key(0)``); same key, same results.
      template, system_prompt: the prompt template (``plain``, ``zero``, ``chat``), as in
        training.
      params: NNX parameter state to sample with instead of the model's own.
      batch_questions: questions per ``generate`` call (each with ``k`` samples).
      pass_ks: the ``j`` of pass@j (default `metrics.default_ks(k)`: 1, 2, 4, ..., k).
      verifier: a `RoutedVerifier` to use (not closed); default: one made here and closed.
      timeout_s, num_workers: of the verifier made here (math answers).
      sampler: an object with ``generate(prompts, key, SamplingParams, state=)`` to use
        instead of ``Sampler(model)`` (reuse one to share compiled executables).
      num_examples: how many sampled outputs per suite to keep in ``examples``.
      progress: show a tqdm bar over batches.
      scorer: best-of-n selection: an object with ``raw_scores(prompts, responses) -> [N]``
        over token-id lists (e.g. ``upt_jax.train.reward_model.LearnedReward``); per question
        the highest-scoring of its ``k`` samples is kept and ``best_of_k`` reports their accuracy.
      reward_fns: a `upt_jax.rewards.RewardFunctions` (not closed) that scores every sample
        instead of the verifiers: a sample counts as correct when its reward is > 0.5, and
        ``mean_reward`` is the suite's mean reward (records then need no ``answer``).
      completions: a list that receives one dict per sample (``suite``, ``id``, ``sample``,
        ``prompt``, ``answer``, ``completion``, ``reward``, ``reason``): what ``upt eval`` writes to
        ``completions.jsonl``.

    Returns:
      ``{name: SuiteResult}`` in the order of ``suites``.
    """
    import jax

    from upt_jax.rewards import RoutedVerifier
    from upt_jax.sampling import Sampler, SamplingParams

    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    if batch_questions < 1:
        raise ValueError(f"batch_questions must be ≥ 1, got {batch_questions}")
    pass_ks = tuple(sorted(set(metrics.default_ks(k) if pass_ks is None else pass_ks)))
    if any(not 1 <= j <= k for j in pass_ks):
        raise ValueError(f"pass@j needs 1 ≤ j ≤ k={k}, got {pass_ks}")
    key = jax.random.key(0) if key is None else key
    if sampler is None:
        sampler = Sampler(model, pad_id=tokenizer.pad_id)
    sp = SamplingParams(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        n=k,
        stop_token_ids=tuple(tokenizer.stop_ids),
    )
    own_verifier = verifier is None
    if own_verifier and reward_fns is None:
        verifier = RoutedVerifier(timeout_s=timeout_s, num_workers=num_workers)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = sum(-(-len(r) // batch_questions) for r in suites.values())
        bar = tqdm(total=total, desc="eval", unit="batch")
    results: dict[str, SuiteResult] = {}
    try:
        for name, records in suites.items():
            t0 = time.perf_counter()
            records = list(records)
            skey = suite_key(key, name)
            correct = np.zeros((len(records), k), np.float64)
            scores = np.full((len(records), k), -np.inf)
            lengths, finished = [], []
            reasons: collections.Counter = collections.Counter()
            total_reward = 0.0
            examples: list[dict] = []
            for b, start in enumerate(range(0, len(records), batch_questions)):
                batch = records[start : start + batch_questions]
                prompts = [eval_prompt_ids(tokenizer, r, template, system_prompt) for r in batch]
                out = sampler.generate(prompts, jax.random.fold_in(skey, b), sp, state=params)
                rows = len(out.lengths)
                if rows != len(batch) * k:
                    raise RuntimeError(f"the sampler returned {rows} rows for {len(batch)} prompts × {k}")
                texts = [tokenizer.decode(out.tokens[i, : out.lengths[i]]) for i in range(rows)]
                qidx = np.asarray(out.prompt_index)
                rewards = _score(verifier, reward_fns, [batch[j] for j in qidx], texts, default_verifier)
                picked = None
                if scorer is not None:
                    picked = np.asarray(
                        scorer.raw_scores(
                            [prompts[j] for j in qidx], [out.tokens[i, : out.lengths[i]].tolist() for i in range(rows)]
                        )
                    )
                slot = collections.Counter()
                for i, (j, r) in enumerate(zip(qidx, rewards)):
                    correct[start + j, slot[j]] = float(r.correct)
                    if picked is not None:
                        scores[start + j, slot[j]] = picked[i]
                    slot[j] += 1
                    reasons[r.reason] += 1
                    total_reward += r.score
                    if completions is not None:
                        completions.append(
                            {
                                "suite": name,
                                "id": str(batch[j].get("id", start + j)),
                                "sample": slot[j] - 1,
                                "prompt": batch[j]["question"],
                                "answer": batch[j].get("answer"),
                                "completion": texts[i],
                                "reward": float(r.score),
                                "reason": r.reason,
                            }
                        )
                    if len(examples) < num_examples and slot[j] == 1:
                        examples.append(
                            {
                                "id": str(batch[j].get("id", start + j)),
                                "question": batch[j]["question"],
                                "answer": str(batch[j]["answer"]),
                                "output": texts[i],
                                "reason": r.reason,
                            }
                        )
                lengths.append(np.asarray(out.lengths))
                finished.append(np.asarray(out.finished))
                if bar is not None:
                    bar.update(1)
            counts = correct.sum(axis=1).round().astype(np.int64)
            lengths_all = np.concatenate(lengths) if lengths else np.zeros(0)
            finished_all = np.concatenate(finished) if finished else np.zeros(0, bool)
            results[name] = SuiteResult(
                name=name,
                k=k,
                num_questions=len(records),
                avg_at_k=metrics.avg_at_k(correct) if len(records) else float("nan"),
                pass_at_k={j: metrics.mean_pass_at_k(k, counts, j) for j in pass_ks},
                mean_response_length=float(lengths_all.mean()) if lengths_all.size else float("nan"),
                truncated_frac=float(1.0 - finished_all.mean()) if finished_all.size else float("nan"),
                reasons=dict(sorted(reasons.items())),
                correct_counts=counts.tolist(),
                ids=[str(r.get("id", i)) for i, r in enumerate(records)],
                examples=examples,
                seconds=time.perf_counter() - t0,
                best_of_k=(
                    float(correct[np.arange(len(records)), np.argmax(scores, axis=1)].mean())
                    if scorer is not None and len(records)
                    else None
                ),
                mean_reward=total_reward / max(1, len(records) * k) if reward_fns is not None else None,
            )
            log.info(
                "%s: avg@%d %.3f over %d questions (%.1fs)",
                name,
                k,
                results[name].avg_at_k,
                len(records),
                results[name].seconds,
            )
    finally:
        if bar is not None:
            bar.close()
        if own_verifier and verifier is not None:
            verifier.close()
    return results
