"""STaR (Zelikman et al. 2022): iterated self-training with rationalisation.

Round ``r``: sample ``n`` rationales per training question from the current model; keep the
verified-correct ones; for questions with none, *rationalise* — sample again with the reference
answer given as a hint in the prompt — and keep the correct ones, stored with the original
(hint-free) prompt; then fine-tune the *base* model on everything kept (SFT, restarting from
the base each round as the paper does). The next round samples from that model.

    upt train --config experiments/star.py       # config.mode = "star"

Each round is a run directory ``<run_dir>/round_<r>`` (SFT checkpoints, metrics) beside the
kept data ``<run_dir>/round_<r>/kept.jsonl``; finished rounds are skipped on rerun.
"""

from __future__ import annotations

import copy
import json
import logging
import os

import jax
import numpy as np

log = logging.getLogger(__name__)

HINT = " (Hint: the answer is {answer}.)"


def _sample_correct(sampler, tok, records, config, key, *, hint: bool):
    """``(kept, num_correct)``: the first verified-correct response per question, if any."""
    from upt_jax.data.templates import prompt_ids
    from upt_jax.rewards import Verifier
    from upt_jax.sampling import SamplingParams
    from upt_jax.train.rollouts import verifier_scores

    c = config.data
    prompts = [
        prompt_ids(
            tok,
            r["question"] + (HINT.format(answer=r["answer"]) if hint else ""),
            c.template,
            system_prompt=c.system_prompt,
        )
        for r in records
    ]
    rc = config.rollout
    params = SamplingParams(
        max_new_tokens=rc.max_new_tokens,
        temperature=rc.temperature,
        top_p=rc.top_p,
        top_k=rc.top_k,
        n=rc.n,
        stop_token_ids=tok.stop_ids,
    )
    out = sampler.generate(prompts, key, params)
    texts = [tok.decode(out.tokens[i, : out.lengths[i]]) for i in range(len(out.lengths))]
    with Verifier(config.data.verifier) as v:
        scores = verifier_scores(v, texts, [records[j] for j in out.prompt_index])
    kept = {}
    for i, j in enumerate(out.prompt_index):
        if scores[i] > 0.5 and j not in kept:
            kept[j] = dict(
                id=records[j]["id"],
                question=records[j]["question"],
                answer=records[j]["answer"],
                demonstration=texts[i],
                rationalised=hint,
            )
    return kept, int(np.sum(scores > 0.5))


def run_star(config) -> list[dict]:
    """Run (or resume) ``config.star.rounds`` rounds; returns one report per round."""
    from upt_jax.train.run_model import load_run_model
    from upt_jax.train.model_source import build_model
    from upt_jax.train.records import load_records
    from upt_jax.train.trainer import train
    from upt_jax.data import load_tokenizer
    from upt_jax.sampling import Sampler
    from upt_jax.train import schema
    from upt_jax.train.vocab import check_tokenizer_fits

    schema.validate(config)  # every key in its domain, before anything is read or built
    s = config.star
    source = load_records(config)
    records = [source[i] for i in range(min(s.questions, len(source)))]
    tok = load_tokenizer(config.tokenizer)
    check_tokenizer_fits(config, tok.vocab_size)
    reports, previous = [], None
    for r in range(1, s.rounds + 1):
        round_dir = os.path.join(config.run_dir, f"round_{r}")
        done = os.path.join(round_dir, "DONE.json")
        if os.path.exists(done):
            with open(done) as f:
                reports.append(dict(json.load(f), status="already done"))
            previous = round_dir
            continue
        if previous is None:
            special = dict(eos_token_id=tok.eos_id, bos_token_id=tok.bos_id, pad_token_id=tok.pad_id)
            model = build_model(config.model, vocab_size=tok.vocab_size, special=special)
        else:
            model, _, _, _ = load_run_model(previous)
        key = jax.random.fold_in(jax.random.key(config.seed), r)
        sampler = Sampler(model, pad_id=tok.pad_id)
        kept, n_correct = _sample_correct(sampler, tok, records, config, key, hint=False)
        missing = [rec for j, rec in enumerate(records) if j not in kept]
        rationalised = {}
        if s.rationalise and missing:
            rationalised, _ = _sample_correct(sampler, tok, missing, config, jax.random.fold_in(key, 1), hint=True)
        data = list(kept.values()) + list(rationalised.values())
        os.makedirs(round_dir, exist_ok=True)
        data_file = os.path.join(round_dir, "kept.jsonl")
        with open(data_file, "w") as f:
            for row in data:
                f.write(json.dumps(row) + "\n")
        report = dict(
            round=r,
            questions=len(records),
            solved=len(kept),
            rationalised=len(rationalised),
            correct_samples=n_correct,
            kept=len(data),
            run_dir=round_dir,
        )
        log.info("STaR round %d: %s", r, report)
        if len(data) >= 1:
            sft = copy.deepcopy(config)
            sft.mode, sft.recipe.name, sft.run_dir = "offline", "sft", round_dir
            sft.data.source, sft.data.path, sft.data.format = "file", data_file, "jsonl"
            sft.data.fields = dict(question="question", answer="answer", demonstration="demonstration", id="id")
            q = min(config.train.questions_per_step, len(data))
            sft.train.questions_per_step = max(1, q - q % 2) if len(data) > 1 else 1
            sft.train.microbatches = 1
            train(sft)  # from the base model (config.model), as STaR restarts each round
            previous = round_dir
        else:
            log.warning("STaR round %d kept nothing: the next round samples from the same model", r)
        with open(done, "w") as f:
            json.dump(report, f, indent=2)
        reports.append(dict(report, status="ran"))
    return reports
