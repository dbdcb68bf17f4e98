"""The countdown family (upt_jax.data.countdown): seeded random-access generation; every label once
in a question; every value a try reads is the value under its label in the question or an earlier
try; every demonstration's box reaches the target under the verifier; the RL tier's corpus slips at
its stated rate, each one rejected; the family runs through pre-training, GRPO and evaluation."""

import random
import re

import pytest

from upt_jax.data import countdown, tasks
from upt_jax.rewards import Verifier
from upt_jax.rewards.countdown import expression_value, parse_expression, parse_reference

TRY = re.compile(r"([A-Z])(\d+)([-+*])([A-Z])(\d+)=([A-Z])(\d+)")
N = 120


def _value(expr: str) -> int:
    return expression_value(parse_expression(expr)[0])


def _boxed(demo: str) -> str:
    return re.fullmatch(r"\\boxed\{(.*)\}", demo.splitlines()[-1]).group(1)


def test_generation_is_seeded_and_random_access():
    for tier in countdown.COUNTDOWN_TIERS:
        assert tasks.generate(tier, 4, seed=3, start=5) == tasks.generate(tier, 9, seed=3)[5:]
        assert tasks.generate(tier, 6, seed=3) != tasks.generate(tier, 6, seed=4)
    fam = tasks.get_task("countdown")
    assert tuple(fam.tiers_at(lv) for lv in ("base", "rl", "sft", "ood", "ext")) == (
        ("cd_2", "cd_3p"),
        ("cd_3",),
        ("cd_3m",),
        ("cd_3r",),
        ("cd_4", "cd_4m"),
    )
    # the held-out tier at the trained depth lists cd_3's operations the other way, so its trace
    # tries × first, which no corpus document does
    r = fam.record("cd_3r", 0, 0)
    assert r["question"].endswith("with *+.") and r["demonstration"].split("\n")[0][2] == "*"
    assert fam.verifier == "countdown" and fam.record("cd_3", 0, 0)["verifier"] == "countdown"


@pytest.mark.parametrize("tier", tuple(countdown.COUNTDOWN_TIERS))
def test_every_label_once_and_every_value_read_is_the_labelled_one(tier):
    count, ops, _, _ = countdown.COUNTDOWN_TIERS[tier]
    for r in tasks.generate(tier, N, seed=0):
        q = re.fullmatch(r"Make T(\d+) from ((?:[A-Z]\d )*[A-Z]\d) with ([-+*]+)\.", r["question"])
        assert q is not None, r["question"]
        labelled = dict(re.findall(r"([A-Z])(\d+)", r["question"]))
        assert len(labelled) == len(re.findall(r"[A-Z]", r["question"])) - 1 == count + 1  # once each ("Make" aside)
        assert not set(labelled) & set("QALM")  # never a capital of the prompt templates' words or "Make"
        assert q.group(3) == ops and parse_reference(r["answer"]) == (r["numbers"], r["target"], ops)
        defined = {k: int(v) for k, v in labelled.items()}
        lines = r["demonstration"].splitlines()
        assert len(r["demonstration"]) <= countdown.MAX_CHARS
        for line in lines[:-1]:
            tries = TRY.findall(line)
            assert tries and line.replace(" over", "").count("=") == len(tries), line
            for la, a, op, lb, b, lr, res in tries:
                a, b, res = int(a), int(b), int(res)
                # every value read is the one under its label, in the question or an earlier try
                assert defined[la] == a and defined[lb] == b, (r["question"], line)
                assert op in ops and res == {"+": a + b, "-": a - b, "*": a * b}[op] > 0, line
                assert a >= b or op != "-"  # − writes the larger value first
                assert defined.setdefault(lr, res) == res, line  # a new label, or the same try restated
                assert lr in countdown.RESULT_LABELS
        last = TRY.findall(lines[-2])[-1]
        assert int(last[-1]) == r["target"]  # the search stops at the target
        assert _value(_boxed(r["demonstration"])) == r["target"]


def test_every_demonstration_is_accepted_by_the_verifier_and_each_tier_keeps_its_promise():
    with Verifier("countdown") as v:
        for tier, (count, ops, _, rule) in countdown.COUNTDOWN_TIERS.items():
            recs = tasks.generate(tier, N, seed=1)
            assert list(v.scores([r["demonstration"] for r in recs], [r["answer"] for r in recs])) == [1.0] * N
            for r in recs:
                steps = countdown.search(r["numbers"], r["target"], ops)
                misses = [s for s in steps[:-1] if abs(s.result.value - r["target"]) == 1]
                if rule == "near_miss":
                    assert len(misses) == 1  # where the corpus's slip happens
                if rule == "needs_minus":
                    assert r["target"] not in countdown.reachable(r["numbers"], "+*")
                    assert "-" in _boxed(r["demonstration"])
                assert r["target"] not in r["numbers"] and 1 <= r["target"] <= 99
    # the worked example of the module docstring
    assert countdown.render(countdown.search([3, 5, 7], 22, "+*")) == (
        "B3+C5=F8: F8+D7=G15, F8*D7=H56\nB3*C5=I15: I15+D7=J22\n\\boxed{(3*5)+7}"
    )
    # a dead end with monotone operations only is cut off, with − it is expanded
    assert "F11 over" in countdown.render(countdown.search([5, 6, 1], 7, "+*"))
    assert "F17: F17+D2=G19, F17-D2=H15" in countdown.render(countdown.search([9, 8, 2], 15, "+-*"))


def test_corpus_slips_only_the_rl_tier_at_the_stated_rate_and_each_slip_is_rejected():
    assert countdown.CORPUS_SLIPS == {"cd_3": 0.4}
    docs = countdown.COUNTDOWN.corpus(2500, 0, tiers=countdown.CORPUS_TIERS)
    rejected = {}
    with Verifier("countdown") as v:
        for d in docs:
            q = re.search(r"Make T(\d+) from ((?:[A-Z]\d ?)+) with ([-+*]+)\.", d)
            if q is None:
                assert "boxed" not in d and all(re.fullmatch(r"\d+[-+*]\d+=\d+", f) for f in d.splitlines())
                continue
            numbers = tuple(int(x) for x in re.findall(r"[A-Z](\d)", q.group(2)))
            tier = {(2, "+-*"): "cd_2", (3, "+"): "cd_3p", (3, "+*"): "cd_3"}[(len(numbers), q.group(3))]
            answer = countdown.reference(numbers, int(q.group(1)), q.group(3))
            ok = v([d], [answer])[0].correct
            rejected.setdefault(tier, []).append(not ok)
            if not ok:  # a slip: the last try writes the target, the box holds its true value (target ± 1)
                assert int(TRY.findall(d.splitlines()[-2])[-1][-1]) == int(q.group(1))
                assert abs(_value(_boxed(d)) - int(q.group(1))) == 1
    assert not any(rejected["cd_2"]) and not any(rejected["cd_3p"])
    rate = sum(rejected["cd_3"]) / len(rejected["cd_3"])
    assert len(rejected["cd_3"]) > 600 and abs(rate - 0.4) < 0.05, rate
    item = countdown.make_countdown_question("cd_3", 0, 3)
    assert countdown.slipped(item)["demonstration"] != item["demonstration"]
    assert countdown.slipped(countdown.make_countdown_question("cd_2", 0, 0)).keys() == item.keys()
    facts = countdown.countdown_facts(random.Random(0), 200)
    for f in facts:
        a, op, b, c = re.fullmatch(r"(\d+)([-+*])(\d+)=(\d+)", f).groups()
        assert {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op] == int(c)


def test_labelled_facts_name_every_label_once_and_leave_the_default_corpus_unchanged():
    """``labelled_facts`` writes fact documents as trace steps with labels (each once per document,
    results under the first unused result label), with the same values as the unlabelled draw; the
    three-number corpus names the fourth given label ``E`` only through them. At 0 the corpus is
    the one the shipped base was trained on (its hash from before the option existed)."""
    import hashlib

    family = tasks.get_task("countdown")
    docs = family.corpus(300, seed=0, tiers=countdown.CORPUS_TIERS)
    digest = hashlib.sha256("\x00".join(docs).encode()).hexdigest()
    assert digest == "6f2eef0626a844bdfa04e595b219099c5f1432a63ea73a6b65e4e5d84d4dbdc4"
    assert not any("E" in d for d in docs)
    labelled = family.corpus(300, seed=0, tiers=countdown.CORPUS_TIERS, labelled_facts=0.5)
    changed = [(a, b) for a, b in zip(docs, labelled) if a != b]
    assert 20 < len(changed) < 60  # half of the ~25 % fact documents
    assert sum("E" in b for _, b in changed) > len(changed) // 2
    step = re.compile(r"([A-Z])(\d+)([-+*])([A-Z])(\d+)=([A-Z])(\d+)")
    for plain, lab in changed:
        lines = lab.splitlines()
        assert [re.sub("[A-Z]", "", line) for line in lines] == plain.splitlines()  # the same facts
        tries = [step.fullmatch(line).groups() for line in lines if step.fullmatch(line)]
        assert len(tries) == 6  # 20 labels: six facts of three, the rest unlabelled
        names = [t[i] for t in tries for i in (0, 3, 5)]
        assert len(set(names)) == len(names) and set(names) <= set(countdown.GIVEN_LABELS + countdown.RESULT_LABELS)
        results = [t[5] for t in tries]
        assert set(results) <= set(countdown.RESULT_LABELS)
        for r in results:  # each result takes the first result label no earlier fact had used
            earlier = names[: names.index(r) - 2]
            assert r == next(x for x in countdown.RESULT_LABELS if x not in earlier)
    assert countdown.countdown_facts(random.Random(1), 12, labelled=1.0) != countdown.countdown_facts(
        random.Random(1), 12
    )


def test_corpus_options_reach_the_family_and_are_checked():
    """``config.data.corpus.options`` are the family's ``corpus_doc`` keywords: passed through to
    the pre-training records, checked against their domain, unknown keys refused."""
    from experiments import pretrain_countdown
    from upt_jax.train import schema
    from upt_jax.train.records import corpus_records

    config = pretrain_countdown.get_config()
    config.data.corpus.n_docs = 200
    plain = corpus_records(config)
    pretrain_countdown.pretrain_hint.apply_overrides(config, ["x", "--config.data.corpus.options.labelled_facts=1.0"])
    assert config.data.corpus.options.labelled_facts == 1.0
    labelled = corpus_records(config)
    with pytest.raises(SystemExit, match="open-dict"):
        pretrain_countdown.pretrain_hint.apply_overrides(config, ["--config.train.steps=3"])
    assert not any("E" in r["text"] for r in plain) and any("E" in r["text"] for r in labelled)
    for bad, raw in (("labelled_facts", "1.5"), ("no_such_option", "1")):
        with pytest.raises(schema.ConfigError, match=bad):
            schema.apply_override(config, f"data.corpus.options.{bad}", raw)


def test_countdown_runs_through_pretraining_grpo_and_evaluation(tmp_path):
    """The public API end to end, tiny: `experiments/pretrain_countdown.py`'s corpus, GRPO on the
    family's tiers scored by each record's own verifier (``countdown``, while ``data.verifier`` is
    the default ``integer``), and an evaluation by the family's name."""
    from experiments import grpo, pretrain_countdown
    from upt_jax.eval.evaluate import evaluate, synthetic_suites
    from upt_jax.eval.inputs import parse_tiers
    from upt_jax.train.run_model import load_run_model
    from upt_jax.train.trainer import train

    small = dict(num_layers=1, hidden_size=32, intermediate_size=64, num_heads=2, num_kv_heads=1, head_dim=16)
    pre = pretrain_countdown.get_config()
    assert pre.train.schedule == "constant" and pretrain_countdown.criterion().tiers == ("cd_2", "cd_3p", "cd_3")
    pre.run_dir, pre.model.overrides = str(tmp_path / "pre"), dict(small)
    pre.data.corpus.n_docs, pre.train.steps, pre.train.questions_per_step, pre.log.progress = 32, 2, 8, False
    pre.mesh.data, pre.mesh.fsdp, pre.mesh.tensor = -1, 1, 1
    train(pre)
    rl = grpo.get_config()
    rl.run_dir = str(tmp_path / "grpo")
    rl.model.init, rl.model.checkpoint, rl.model.overrides = "checkpoint", str(tmp_path / "pre"), dict(small)
    rl.data.tiers, rl.data.n_per_tier = ("cd_3", "cd_2"), 8
    rl.train.steps, rl.train.questions_per_step, rl.rollout.n, rl.rollout.max_new_tokens = 1, 2, 4, 8
    rl.mesh.data, rl.mesh.fsdp, rl.mesh.tensor = 8, 1, 1
    rl.log.progress = False
    assert rl.data.verifier == "integer"
    (m,) = train(rl)
    routed = {k: v for k, v in m.items() if k.startswith("reward/countdown/")}
    assert sum(routed.values()) == 8 and not any(k.startswith(("reward/no_answer", "reward/wrong")) for k in m)
    assert parse_tiers(["countdown/rl"]) == ("cd_3",)
    model, tok, _, _ = load_run_model(tmp_path / "grpo")
    suites = synthetic_suites(("cd_2",), n=2)
    results = evaluate(model, tok, suites, k=2, max_new_tokens=8, default_verifier="integer")
    assert results["cd_2"].num_questions == 2 and suites["cd_2"][0]["verifier"] == "countdown"


def test_held_out_variants_are_a_user_family_of_verified_prompts_not_in_the_corpus():
    """``benchmarks/countdown_ood.py``'s variants go through the public task API with the generator's
    ``spec``: each demonstration is accepted by the verifier, each prompt lists the variant's
    operations, and no variant's prompt is one the pre-training corpus's tiers write."""
    from benchmarks import countdown_ood

    fam = countdown_ood.register()
    assert fam.tier_names == tuple(countdown_ood.VARIANTS)
    corpus = {r["question"] for t in countdown.CORPUS_TIERS for r in tasks.generate(t, 400, seed=0)}
    with Verifier("countdown") as v:
        for tier, (count, ops, _, _) in countdown_ood.VARIANTS.items():
            recs = tasks.generate(tier, 40, seed=4242)
            assert list(v.scores([r["demonstration"] for r in recs], [r["answer"] for r in recs])) == [1.0] * 40
            assert all(r["question"].endswith(f"with {ops}.") and len(r["numbers"]) == count for r in recs)
            if ops not in ("+*",):  # another order or set of operations: a prompt the corpus never has
                assert not corpus & {r["question"] for r in recs}
    got = {"a": {"cdv_3r": {"greedy": 0.5, "avg@8": 0.4}}, "b": {"cdv_3r": {"greedy": 0.7, "avg@8": 0.45}}}
    assert countdown_ood.spread(got)["cdv_3r"] == pytest.approx({"greedy": 0.2, "avg@8": 0.05})
