"""evaluate(): real numbers on a tiny random model, determinism, and that answers are truly
verified (a sampler that writes the correct answer scores 1, a wrong one 0, a known mix the
exact pass@k)."""

import math

import jax
import numpy as np
import pytest

from upt_jax.eval import benchmark_suites, evaluate, metrics, synthetic_suites
from upt_jax.eval.evaluate import DEFAULT_EVAL_SEED, SuiteResult, eval_prompt_ids
from upt_jax.sampling import SampleOutput

SAMPLING = dict(k=4, temperature=1.0, top_p=1.0, max_new_tokens=16)


def test_tiny_model_numbers(tiny_model, tok, sampler):
    suites = synthetic_suites(["add_2", "sub_3"], n=6)
    res = evaluate(tiny_model, tok, suites, key=jax.random.key(0), sampler=sampler, **SAMPLING)
    assert list(res) == ["add_2", "sub_3"]
    for name, r in res.items():
        assert r.num_questions == 6 and r.k == 4 and len(r.correct_counts) == 6
        assert r.ids == [q["id"] for q in suites[name]]
        assert 0.0 <= r.avg_at_k <= 1.0
        assert sorted(r.pass_at_k) == [1, 2, 4]
        values = [r.pass_at_k[j] for j in (1, 2, 4)]
        assert all(0.0 <= v <= 1.0 for v in values)
        assert values == sorted(values)  # non-decreasing in k
        assert r.pass_at_k[1] == pytest.approx(r.avg_at_k)
        assert sum(r.reasons.values()) == 6 * 4  # every sample verified
        assert 0 < r.mean_response_length <= 16 and 0.0 <= r.truncated_frac <= 1.0
        assert len(r.examples) == 3 and r.examples[0]["question"] == suites[name][0]["question"]
    # deterministic for a key: same key, same samples; another key, other samples
    again = evaluate(tiny_model, tok, suites, key=jax.random.key(0), sampler=sampler, **SAMPLING)
    other = evaluate(tiny_model, tok, suites, key=jax.random.key(1), sampler=sampler, **SAMPLING)
    for name in suites:
        assert again[name].to_dict() | {"seconds": 0} == res[name].to_dict() | {"seconds": 0}
    assert [e["output"] for e in other["add_2"].examples] != [e["output"] for e in res["add_2"].examples]
    # a suite's numbers do not depend on which other suites are evaluated with it
    alone = evaluate(tiny_model, tok, {"sub_3": suites["sub_3"]}, key=jax.random.key(0), sampler=sampler, **SAMPLING)
    assert alone["sub_3"].examples == res["sub_3"].examples
    assert alone["sub_3"].mean_response_length == res["sub_3"].mean_response_length


def test_params_override_samples_with_other_weights(tiny_model, tok, sampler):
    from flax import nnx

    from upt_jax.models import init_model

    other = nnx.state(init_model(tiny_model.cfg, 7))
    suites = synthetic_suites(["add_2"], n=4)
    own = evaluate(tiny_model, tok, suites, key=jax.random.key(0), sampler=sampler, **SAMPLING)
    swapped = evaluate(tiny_model, tok, suites, key=jax.random.key(0), sampler=sampler, params=other, **SAMPLING)
    assert [e["output"] for e in own["add_2"].examples] != [e["output"] for e in swapped["add_2"].examples]


def test_synthetic_and_benchmark_suites():
    s = synthetic_suites(["add_3", "mul_4x1"], n=5)
    assert list(s) == ["add_3", "mul_4x1"] and all(len(v) == 5 for v in s.values())
    assert all(
        r["verifier"] == "integer" and r["id"].endswith(f"/{DEFAULT_EVAL_SEED}/{i}")
        for v in s.values()
        for i, r in enumerate(v)
    )
    assert synthetic_suites(["add_3"], n=5, seed=3)["add_3"][0]["question"] != s["add_3"][0]["question"]
    default = synthetic_suites(n=1)
    assert len(default) == 12 and "add_8" in default and "add_2" in default
    b = benchmark_suites(["gpqa", "aime24"], limit=3)
    assert list(b) == ["gpqa_diamond", "aime24"]
    assert [r["verifier"] for r in b["gpqa_diamond"]] == ["choice"] * 3
    assert len(benchmark_suites(["amc23"])["amc23"]) == 40


class ScriptedSampler:
    """Writes a boxed answer for every sample: the gold answer for the first ``c`` samples of
    a question (``c = correct_per_question(record)``), a wrong one for the rest."""

    def __init__(self, tok, suites, template, correct_per_question):
        self.tok, self.by_prompt = tok, {}
        for records in suites.values():
            for r in records:
                self.by_prompt[tuple(eval_prompt_ids(tok, r["question"], template, None))] = r
        self.correct_per_question = correct_per_question
        self.calls = []

    @staticmethod
    def wrong(record):
        if record["verifier"] == "choice":
            return "A" if record["answer"] != "A" else "B"
        return str(int(record["answer"]) + 1) if record["answer"].lstrip("-").isdigit() else "\\sqrt{17}"

    def generate(self, prompts, key, params, *, state=None):
        self.calls.append(len(prompts))
        texts = []
        for p in prompts:
            r = self.by_prompt[tuple(p)]
            c = self.correct_per_question(r)
            for s in range(params.n):
                ans = r["answer"] if s < c else self.wrong(r)
                texts.append(f"Let me see.\nso the answer is \\boxed{{{ans}}}")
        ids = [self.tok.encode(t) + [self.tok.eos_id] for t in texts]
        width = max(map(len, ids))
        tokens = np.full((len(ids), width), self.tok.pad_id, np.int32)
        for i, x in enumerate(ids):
            tokens[i, : len(x)] = x
        lengths = np.asarray([len(x) for x in ids])
        z = np.zeros(tokens.shape, np.float32)
        return SampleOutput(
            tokens=tokens,
            logprobs=z,
            sampling_logprobs=z,
            lengths=lengths,
            finished=np.ones(len(ids), bool),
            prompt_index=np.repeat(np.arange(len(prompts)), params.n),
        )


def test_correct_answers_score_one_wrong_answers_zero(tok):
    suites = synthetic_suites(["add_2", "mul_2x2"], n=5)
    suites.update(benchmark_suites(["aime24", "gpqa", "math500"], limit=4))
    for c, expected in ((4, 1.0), (0, 0.0)):
        fake = ScriptedSampler(tok, suites, "zero", lambda r, c=c: c)
        res = evaluate(None, tok, suites, key=jax.random.key(0), sampler=fake, batch_questions=3, **SAMPLING)
        assert fake.calls == [3, 2, 3, 2, 3, 1, 3, 1, 3, 1]  # batched, 3 questions per call
        for name, r in res.items():
            assert r.avg_at_k == expected, name
            assert all(v == expected for v in r.pass_at_k.values()), name
            assert r.reasons == {"correct" if c else "wrong": r.num_questions * 4}, name
            assert r.truncated_frac == 0.0


def test_mixed_correctness_gives_exact_pass_at_k(tok):
    """Question i of a suite has (i mod 5) correct samples of k=4: avg@k and pass@j follow the
    estimator exactly, so every sample's verdict reached the right question."""
    suites = synthetic_suites(["add_3"], n=10)
    suites.update(benchmark_suites(["gpqa"], limit=5))
    index = {r["id"]: i for v in suites.values() for i, r in enumerate(v)}
    fake = ScriptedSampler(tok, suites, "zero", lambda r: min(index[r["id"]] % 5, 4))
    res = evaluate(None, tok, suites, key=jax.random.key(0), sampler=fake, batch_questions=4, **SAMPLING)
    for name, records in suites.items():
        counts = [min(i % 5, 4) for i in range(len(records))]
        r = res[name]
        assert r.correct_counts == counts
        assert r.avg_at_k == pytest.approx(sum(counts) / (4 * len(records)))
        for j in (1, 2, 4):
            expected = np.mean([1 - math.comb(4 - c, j) / math.comb(4, j) for c in counts])
            assert r.pass_at_k[j] == pytest.approx(expected)
        assert r.reasons == {"correct": sum(counts), "wrong": 4 * len(records) - sum(counts)}


@pytest.mark.parametrize("template", ["plain", "chat"])
def test_template_reaches_the_prompt(tok, template):
    suites = synthetic_suites(["add_2"], n=2)
    fake = ScriptedSampler(tok, suites, template, lambda r: 4)
    res = evaluate(None, tok, suites, sampler=fake, template=template, **SAMPLING)
    assert res["add_2"].avg_at_k == 1.0
    with pytest.raises(KeyError):  # prompts built with another template are not the same tokens
        evaluate(None, tok, suites, sampler=fake, template="zero", **SAMPLING)


def test_argument_checks(tok):
    suites = synthetic_suites(["add_2"], n=1)
    fake = ScriptedSampler(tok, suites, "zero", lambda r: 1)
    with pytest.raises(ValueError):
        evaluate(None, tok, suites, sampler=fake, k=0)
    with pytest.raises(ValueError):
        evaluate(None, tok, suites, sampler=fake, k=2, pass_ks=[4])
    res = evaluate(None, tok, suites, sampler=fake, k=3, pass_ks=[3, 1], max_new_tokens=8)
    assert sorted(res["add_2"].pass_at_k) == [1, 3]
    assert res["add_2"].pass_at_k[3] == 1.0 and res["add_2"].pass_at_k[1] == pytest.approx(1 / 3)
    assert metrics.default_ks(3) == (1, 2, 3)


class _OracleScorer:
    """Scores a response by whether it contains the gold answer (a perfect reward model), or
    its opposite (an adversarial one)."""

    def __init__(self, tok, suites, template, sign=1.0):
        self.tok, self.sign = tok, sign
        self.gold = {
            tuple(eval_prompt_ids(tok, r["question"], template, None)): r["answer"]
            for records in suites.values()
            for r in records
        }

    def raw_scores(self, prompts, responses):
        return np.asarray(
            [
                self.sign * float("{" + self.gold[tuple(p)] + "}" in self.tok.decode(r))
                for p, r in zip(prompts, responses)
            ],
            np.float32,
        )


def test_best_of_n_picks_the_scorers_choice(tok):
    suites = synthetic_suites(["add_3"], n=6)
    fake = ScriptedSampler(tok, suites, "zero", lambda r: 1)  # 1 correct sample of 4 per question
    good = evaluate(
        None, tok, suites, key=jax.random.key(0), sampler=fake, scorer=_OracleScorer(tok, suites, "zero"), **SAMPLING
    )["add_3"]
    assert good.avg_at_k == pytest.approx(0.25) and good.best_of_k == 1.0
    bad = evaluate(
        None,
        tok,
        suites,
        key=jax.random.key(0),
        sampler=fake,
        scorer=_OracleScorer(tok, suites, "zero", sign=-1.0),
        **SAMPLING,
    )["add_3"]
    assert bad.best_of_k == 0.0
    plain = evaluate(None, tok, suites, key=jax.random.key(0), sampler=fake, **SAMPLING)["add_3"]
    assert plain.best_of_k is None
    assert SuiteResult.from_dict(good.to_dict()).best_of_k == 1.0
