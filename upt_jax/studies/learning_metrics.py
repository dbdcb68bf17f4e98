"""What the learning checks measure, per held-out item, so that `upt_jax.eval.paired` can pair an
item's value after training with its value before (`upt_jax.studies.learning`), and the data some
checks prepare from the base model.

Every measure returns ``{item id: value}``:

* `preference_accuracy`: per held-out pair, 1 when the implicit reward ranks the chosen response
  above the rejected one, 0 when below, ½ on a tie (the reference-based rewards of DPO, IPO and KTO,
  ``log π_θ(y) − log π_ref(y)``, are exactly 0 for both responses at the start: ½);
* `forward_kl`: per held-out demonstration, ``mean_t KL(p_T(·|x, y_<t) ‖ q_θ(·|x, y_<t))`` (nats/token);
* `pair_accuracy` (reward model) and `step_accuracy` (PRM): per held-out pair / demonstration;
* `learned_reward`: per held-out question, the mean reward-model score of the policy's samples,
  with the verifier's accuracy of the same samples and the scores' spread (`in_spread_units`);
* `critic_errors`: per held-out question, the squared error of PPO's critic against the returns
  of the policy's own samples, beside that of the best constant baseline (the variance a critic
  exists to remove).
"""

from __future__ import annotations

import collections
import json
import logging
import os

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "sample_completions",
    "preference_pairs",
    "read_jsonl",
    "perturbed_student",
    "preference_accuracy",
    "forward_kl",
    "pair_accuracy",
    "step_accuracy",
    "learned_reward",
    "in_spread_units",
    "explained_variance_change",
    "critic_errors",
]


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _write_jsonl(path: str, rows) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def sample_completions(
    model_dir: str, records: list[dict], *, k: int, max_new_tokens: int, seed: int, samplers=None
) -> list[dict]:
    """``k`` samples at T = 1 per record from the model in ``model_dir`` (a run or shipped model
    directory), verified: `upt_jax.eval.evaluate.evaluate`'s ``completions`` rows (``id``,
    ``completion``, ``reward``, ``reason``). ``samplers``: a `comparison_eval.SamplerPool` to reuse."""
    import jax

    from upt_jax.eval.evaluate import evaluate
    from upt_jax.train.run_model import load_run_model

    m, tok, cfg, _ = load_run_model(model_dir)
    sampler, params = samplers.get(m, tok.pad_id) if samplers is not None else (None, None)
    out: list[dict] = []
    evaluate(
        m,
        tok,
        {"samples": records},
        k=k,
        temperature=1.0,
        max_new_tokens=max_new_tokens,
        key=jax.random.key(seed),
        template=cfg.data.get("template", "zero"),
        default_verifier="integer",
        completions=out,
        sampler=sampler,
        params=params,
    )
    return out


def preference_pairs(
    base_dir: str,
    out_dir: str,
    *,
    tier: str,
    n_train: int,
    n_heldout: int,
    k: int,
    max_new_tokens: int,
    eval_seed: int,
    demo_fallback: bool = False,
    pairs_per_question: int = 1,
    samplers=None,
) -> dict:
    """Preference data from the base model's own samples on ``tier``: per question, ``k`` samples
    at T = 1; a question with a correct and an incorrect sample gives the pair (first correct,
    first incorrect), and a training question up to ``pairs_per_question`` disjoint pairs (its
    j-th correct with its j-th incorrect sample; ids ``<id>`` then ``<id>/<j>``). Training questions are drawn with seed 0 (minus any held-out question), the
    held-out ones with ``eval_seed``. Writes ``pairs.jsonl`` (prompt, chosen, rejected), ``kto.jsonl``
    (the pairs as unpaired labelled rows) and ``heldout.jsonl`` in ``out_dir`` (kept: a rerun reuses
    them) and returns the counts (``stats.json``): questions without a pair are skipped and counted
    (``all_correct``, ``all_wrong``); with ``demo_fallback`` an all-wrong question takes its
    demonstration as the chosen response (``chosen_from_demo``)."""
    from upt_jax.data import tasks

    stats_file = os.path.join(out_dir, "stats.json")
    if os.path.exists(stats_file):
        with open(stats_file) as f:
            return json.load(f)
    os.makedirs(out_dir, exist_ok=True)
    heldout_q = tasks.generate(tier, n_heldout, seed=eval_seed)
    seen = {r["question"] for r in heldout_q}
    train_q = [r for r in tasks.generate(tier, n_train + n_heldout, seed=0) if r["question"] not in seen][:n_train]
    stats: dict = {"tier": tier, "k": k}
    for split, records in (("train", train_q), ("heldout", heldout_q)):
        by_id = collections.defaultdict(list)
        for row in sample_completions(
            base_dir,
            records,
            k=k,
            max_new_tokens=max_new_tokens,
            seed=eval_seed + (split == "train"),
            samplers=samplers,
        ):
            by_id[row["id"]].append(row)
        pairs, counts = [], collections.Counter(questions=len(records))
        for r in records:
            samples = by_id[str(r["id"])]
            good = [s["completion"] for s in samples if s["reason"] == "correct"]
            bad = [s["completion"] for s in samples if s["reason"] != "correct"]
            if good and bad:
                counts["pairs"] += 1
            elif bad and demo_fallback and r.get("demonstration"):
                good = [r["demonstration"]]
                counts["chosen_from_demo"] += 1
            else:
                counts["all_correct" if good else "all_wrong"] += 1
                continue
            per = pairs_per_question if split == "train" else 1
            for j, (g, b) in enumerate(list(zip(good, bad))[: max(per, 1)]):
                pid = str(r["id"]) if j == 0 else f"{r['id']}/{j}"
                pairs.append(dict(id=pid, prompt=r["question"], chosen=g, rejected=b))
        counts["pair_rows"] = len(pairs)
        stats[split] = dict(counts)
        if not pairs:
            raise ValueError(
                f"preference_pairs: no {split} question of {tier} has both a correct and an incorrect "
                f"sample among {k} ({dict(counts)})"
            )
        _write_jsonl(os.path.join(out_dir, "pairs.jsonl" if split == "train" else "heldout.jsonl"), pairs)
        if split == "train":
            _write_jsonl(
                os.path.join(out_dir, "kto.jsonl"),
                [
                    dict(id=f"{p['id']}/{lab}", prompt=p["prompt"], completion=p[lab], label=lab == "chosen")
                    for p in pairs
                    for lab in ("chosen", "rejected")
                ],
            )
    log.info("preference pairs from %s on %s: %s", base_dir, tier, stats)
    with open(stats_file, "w") as f:
        json.dump(stats, f, indent=2)
    return stats


def perturbed_student(base_dir: str, out_dir: str, *, noise: float, seed: int = 0) -> str:
    """A shipped-model directory in ``out_dir`` holding the base model with every weight matrix
    perturbed, ``W + noise · rms(W) · ε`` (ε standard normal, per element, key ``seed``): a student
    that starts away from its teacher (the base). Written once; returns ``out_dir``."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from upt_jax.models.hf_io import save_hf_checkpoint
    from upt_jax.train import run_model

    if run_model.is_weights_dir(out_dir):
        return out_dir
    model, _ = run_model.model_from_run(base_dir, key="base")
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [
        x + noise * jnp.sqrt(jnp.mean(jnp.square(x))) * jax.random.normal(kk, x.shape, x.dtype) if x.ndim >= 2 else x
        for x, kk in zip(leaves, keys)
    ]
    nnx.update(model, jax.tree.unflatten(treedef, new))
    os.makedirs(out_dir, exist_ok=True)
    save_hf_checkpoint(model, out_dir)
    os.remove(os.path.join(out_dir, "config.json"))  # model.json is the architecture (as bases ship)
    with open(os.path.join(run_model.run_root(base_dir), run_model.MODEL_FILE)) as f:
        record = json.load(f)
    with open(os.path.join(out_dir, run_model.MODEL_FILE), "w") as f:
        json.dump(record, f, indent=2)
    return out_dir


def _rows(tok, template: str, questions, responses):
    from upt_jax.data.templates import prompt_ids
    from upt_jax.train.batching import pack_rows

    prompts = [prompt_ids(tok, q, template) for q in questions]
    rows = pack_rows(prompts, [tok.encode(r) + [tok.eos_id] for r in responses], pad_id=tok.pad_id)
    return rows["tokens"], rows["attention_mask"], rows["mask"]


def _logprob_sums(model, tokens, attn, mask) -> tuple[np.ndarray, np.ndarray]:
    """``(Σ_t log π(y_t), number of response tokens)`` per row ``[N]``."""
    import jax
    from flax import nnx

    from upt_jax.models.logprobs import sequence_logprobs

    graphdef, state = nnx.split(model)
    logp = jax.jit(lambda s, t, a: sequence_logprobs(nnx.merge(graphdef, s), t, a))(state, tokens, attn)
    return np.asarray(logp * mask).sum(axis=1), mask.sum(axis=1)


def preference_accuracy(
    run_dir: str, ref_dir: str, pairs: list[dict], *, reference: bool
) -> tuple[dict[str, float], dict[str, float]]:
    """``({pair id: 1 | ½ | 0}, {pair id: margin})``: whether the policy in ``run_dir`` ranks each
    pair's chosen response above its rejected one by its implicit reward, and by how much (the
    chosen's reward minus the rejected's): ``log π_θ(y) − log π_ref(y)`` (summed over the response;
    ``reference``: DPO, IPO, KTO) or the mean token log-prob (SimPO, ORPO), without β."""
    from upt_jax.train.run_model import load_run_model

    model, tok, cfg, _ = load_run_model(run_dir)
    template = cfg.data.get("template", "zero")
    questions = [p["prompt"] for p in pairs for _ in range(2)]
    tokens, attn, mask = _rows(tok, template, questions, [p[x] for p in pairs for x in ("chosen", "rejected")])
    s, n = _logprob_sums(model, tokens, attn, mask)
    if reference:
        s = s - _logprob_sums(load_run_model(ref_dir)[0], tokens, attn, mask)[0]
    else:
        s = s / np.maximum(n, 1)
    margin = s[0::2] - s[1::2]
    return (
        {p["id"]: float(np.where(m > 0, 1.0, np.where(m < 0, 0.0, 0.5))) for p, m in zip(pairs, margin)},
        {p["id"]: float(m) for p, m in zip(pairs, margin)},
    )


def forward_kl(student_dir: str, teacher_dir: str, records: list[dict]) -> dict[str, float]:
    """``{record id: mean over its demonstration's tokens of KL(p_teacher ‖ q_student)}`` (nats),
    teacher-forced on the records' demonstrations."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from upt_jax.train.run_model import load_run_model

    student, tok, cfg, _ = load_run_model(student_dir)
    teacher = load_run_model(teacher_dir)[0]
    tokens, attn, mask = _rows(
        tok, cfg.data.get("template", "zero"), [r["question"] for r in records], [r["demonstration"] for r in records]
    )

    def logits(model):
        graphdef, state = nnx.split(model)
        return jax.jit(lambda s, t, a: jax.nn.log_softmax(nnx.merge(graphdef, s)(t, attention_mask=a)[0][:, :-1]))(
            state, tokens, attn
        )

    lp_t, lq = logits(teacher), logits(student)
    kl = np.asarray(jnp.sum(jnp.exp(lp_t) * (lp_t - lq), axis=-1))  # [N, T-1]: predicting token t+1
    w = mask[:, 1:]
    return {str(r["id"]): float((kl[i] * w[i]).sum() / max(w[i].sum(), 1)) for i, r in enumerate(records)}


def _scorer(graphdef, params, method: str = "__call__"):
    import jax
    from flax import nnx

    return jax.jit(lambda p, t, a: getattr(nnx.merge(graphdef, p), method)(t, a))


def pair_accuracy(graphdef, params, tok, template: str, pairs: list[dict]) -> dict[str, float]:
    """``{pair id: 1 | ½ | 0}``: the reward model ``(graphdef, params)`` scores the chosen response
    above (tie, below) the rejected one."""
    tokens, attn, _ = _rows(
        tok,
        template,
        [p["prompt"] for p in pairs for _ in range(2)],
        [p[x] for p in pairs for x in ("chosen", "rejected")],
    )
    r = np.asarray(_scorer(graphdef, params)(params, tokens, attn))
    d = r[0::2] - r[1::2]
    return {p["id"]: float(np.where(x > 0, 1.0, np.where(x < 0, 0.0, 0.5))) for p, x in zip(pairs, d)}


def step_accuracy(graphdef, params, tok, template: str, records: list[dict], *, seed: int) -> dict[str, float]:
    """``{record id: fraction of its steps the PRM classifies right}`` on the records'
    demonstrations, each corrupted at one step with probability ½ (`upt_jax.train.prm.step_label_rows`;
    ``seed`` fixes which, so before and after see the same labels). ``graphdef=None``: the majority
    rule that calls every step right (the accuracy a PRM reaches by learning the label rate alone)."""
    from upt_jax.data.templates import prompt_ids
    from upt_jax.train.prm import step_label_rows

    rows = step_label_rows(tok, records, [prompt_ids(tok, r["question"], template) for r in records], seed)
    target, weight = rows["step_targets"], rows["step_weights"]
    if graphdef is None:
        logits = np.ones(target.shape, np.float32)
    else:
        logits = np.asarray(_scorer(graphdef, params, "token_scores")(params, rows["tokens"], rows["attention_mask"]))
    right = ((logits > 0) == (target > 0.5)) * weight
    return {str(r["id"]): float(right[i].sum() / max(weight[i].sum(), 1)) for i, r in enumerate(records)}


def learned_reward(
    policy_dir: str, rm_dir: str, records: list[dict], *, k: int, max_new_tokens: int, seed: int, samplers=None
) -> tuple[dict[str, float], dict[str, float], float]:
    """``({id: mean reward-model score}, {id: verifier accuracy}, spread)`` of ``k`` samples at T = 1
    per record from the policy in ``policy_dir``, scored by the reward model trained in ``rm_dir``;
    ``spread``: the standard deviation of those samples' scores (a Bradley–Terry model's scale is
    its own: `in_spread_units`)."""
    from upt_jax.data.templates import prompt_ids
    from upt_jax.train.reward_model import LearnedReward
    from upt_jax.train.run_model import load_run_model

    _, tok, cfg, _ = load_run_model(policy_dir)
    rows = sample_completions(policy_dir, records, k=k, max_new_tokens=max_new_tokens, seed=seed, samplers=samplers)
    question = {str(r["id"]): r["question"] for r in records}
    rm = LearnedReward(rm_dir, pad_id=tok.pad_id)
    template = cfg.data.get("template", "zero")
    scores = rm.raw_scores(
        [prompt_ids(tok, question[x["id"]], template) for x in rows],
        [tok.encode(x["completion"]) + [tok.eos_id] for x in rows],
    )
    by_id, acc = collections.defaultdict(list), collections.defaultdict(list)
    for x, s in zip(rows, scores):
        by_id[x["id"]].append(float(s))
        acc[x["id"]].append(float(x["reason"] == "correct"))
    return (
        {i: float(np.mean(v)) for i, v in by_id.items()},
        {i: float(np.mean(v)) for i, v in acc.items()},
        float(np.std(np.asarray(scores, np.float64))),
    )


def in_spread_units(scores: dict[str, float], spread: float) -> dict[str, float]:
    """``scores`` divided by ``spread`` (a reward model's standard deviation over the base policy's
    samples): differences in these units can be pooled over seeds whose reward models were trained
    separately, each on its own scale (raises on a zero spread: a constant model ranks nothing)."""
    if not spread > 0:
        raise ValueError(f"in_spread_units: spread must be > 0, got {spread}")
    return {i: v / spread for i, v in scores.items()}


def explained_variance_change(run_dir: str, window: int = 5) -> tuple[float, float]:
    """``(first, last)``: the critic's explained variance of the returns (``critic/explained_variance``
    in ``metrics.jsonl``) averaged over the first and the last ``window`` steps of a PPO run."""
    ev = [
        m["critic/explained_variance"]
        for m in read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
        if "critic/explained_variance" in m
    ]
    if not ev:
        raise ValueError(f"{run_dir}/metrics.jsonl logs no critic/explained_variance (not a PPO run?)")
    w = max(1, min(window, len(ev) // 2 or 1))
    return float(np.mean(ev[:w])), float(np.mean(ev[-w:]))


def critic_errors(
    run_dir: str, records: list[dict], *, k: int, max_new_tokens: int, seed: int, samplers=None
) -> tuple[dict[str, float], dict[str, float], float]:
    """What a PPO run's critic learned, on held-out questions: ``k`` samples at T = 1 per record
    from the run's final policy, each response token's Monte Carlo return (the sample's reward:
    a verifier reward at the last token, γ = 1) against the critic's value there.

    Returns ``({id: mean squared error of the best constant}, {id: mean squared error of the
    critic}, explained variance)``, per question over its samples' response tokens. The constant
    is the mean return over all the samples (the best any critic that ignores the text can do,
    fitted on the very samples it is scored on); the explained variance is ``1 − SE_critic /
    SE_constant`` pooled over every token, so > 0 means the critic's values, used as GAE's
    baseline, leave the advantages less variance than a constant baseline would."""
    from upt_jax.train.frozen import load_critic
    from upt_jax.train.run_model import load_run_model

    _, tok, cfg, _ = load_run_model(run_dir)
    graphdef, params, _ = load_critic(run_dir)
    rows = sample_completions(run_dir, records, k=k, max_new_tokens=max_new_tokens, seed=seed, samplers=samplers)
    question = {str(r["id"]): r["question"] for r in records}
    tokens, attn, mask = _rows(
        tok, cfg.data.get("template", "zero"), [question[x["id"]] for x in rows], [x["completion"] for x in rows]
    )
    values = np.asarray(_scorer(graphdef, params)(params, tokens, attn))
    returns = np.asarray([float(x["reward"]) for x in rows], np.float64)[:, None] * np.ones_like(mask)
    const = float(np.sum(returns * mask) / np.sum(mask))
    se_const, se_critic = (np.square(returns - const) * mask), (np.square(returns - values) * mask)
    by_id = collections.defaultdict(list)
    for i, x in enumerate(rows):
        by_id[x["id"]].append(i)
    before = {q: float(se_const[ix].sum() / mask[ix].sum()) for q, ix in by_id.items()}
    after = {q: float(se_critic[ix].sum() / mask[ix].sum()) for q, ix in by_id.items()}
    total = float(se_const.sum())
    return before, after, (1.0 - float(se_critic.sum()) / total) if total > 0 else 0.0
