"""``upt eval``: evaluate a run directory's latest checkpoint or a Hugging Face directory.

    upt eval --run-dir runs/hpt --k 8 --n-per-tier 100 --out runs/hpt/eval
    upt eval --hf-dir /models/qwen2.5-math-1.5b --benchmarks aime24 math500 --k 16 \\
             --template chat --max-new-tokens 4096 --out eval/qwen
    upt eval --run-dir runs/grpo --data my_eval.jsonl --reward my_rewards:score --k 4

Writes ``completions.jsonl`` too: every sample with its prompt, completion and reward.

Writes ``results.json`` (settings, model source, every `SuiteResult`), ``results.md``
(summary tables) and ``passk.png`` (pass@k curves per suite) to ``--out``.

A command above training (the cli's layer): it rebuilds a run's model
(`upt_jax.train.run_model.load_run_model`) and may score with a trained reward model
(`upt_jax.train.reward_scorers.LearnedReward`); the evaluation itself (`upt_jax.eval`) never
imports training. Both are imported when called: ``upt eval`` loads no JAX before it needs it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Sequence

from upt_jax.eval.inputs import data_suites, hf_template, load_hf_model, parse_tiers

__all__ = ["build_parser", "eval_main"]


def _split(values: Sequence[str] | None) -> list[str]:
    return [x.strip() for v in values or () for x in v.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    from upt_jax.eval.evaluate import DEFAULT_EVAL_SEED

    p = argparse.ArgumentParser(
        prog="upt eval",
        description="pass@k / avg@k of a run directory's checkpoint or a Hugging Face model on the "
        "synthetic tiers and/or the bundled benchmarks",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-dir", help="an upt_jax run directory (config.json + checkpoints/)")
    src.add_argument("--hf-dir", help="a Hugging Face checkpoint directory (with its tokenizer)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step of --run-dir (default: latest)")
    p.add_argument(
        "--tokenizer",
        default=None,
        help='override the tokenizer ("char" or a directory; default: the run\'s / the HF dir)',
    )
    p.add_argument(
        "--tiers",
        nargs="*",
        default=None,
        help="synthetic tiers or groups (train, ood, all, easy, medium, hard); default: "
        "train + ood when no --benchmarks are given",
    )
    p.add_argument(
        "--benchmarks",
        nargs="*",
        default=None,
        help="bundled benchmarks (aime24 aime25 amc23 math500 minerva olympiadbench gpqa_diamond)",
    )
    p.add_argument("--benchmark-limit", type=int, default=None, help="first N items of each benchmark")
    p.add_argument(
        "--data",
        nargs="*",
        default=None,
        help="your evaluation sets: JSONL/JSON/parquet files or saved datasets, any layout "
        "upt_jax.data.layouts reads (a suite per file, named by its stem)",
    )
    p.add_argument(
        "--verifier",
        default="math",
        help="--data: how answers are scored without --reward (math, math_strict, integer, exact, choice, format)",
    )
    p.add_argument(
        "--reward",
        nargs="*",
        default=None,
        help="score with reward functions instead of the verifiers: 'module:function' or a "
        "built-in name (upt_jax.rewards.functions); a sample counts as correct when > 0.5",
    )
    p.add_argument("--reward-weights", nargs="*", type=float, default=None, help="one weight per --reward")
    p.add_argument("--k", type=int, default=8, help="samples per question")
    p.add_argument("--n-per-tier", type=int, default=100, help="questions per synthetic tier")
    p.add_argument("--data-seed", type=int, default=DEFAULT_EVAL_SEED, help="seed of the synthetic questions")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument(
        "--template",
        default=None,
        choices=("plain", "zero", "chat"),
        help="prompt template (default: the run's data.template; for --hf-dir the template an "
        "upt export recorded, else chat when the tokenizer has a chat template, else zero)",
    )
    p.add_argument("--system-prompt", default=None)
    p.add_argument("--batch-questions", type=int, default=64, help="questions per generate call")
    p.add_argument("--param-dtype", default="float32", help="--hf-dir only")
    p.add_argument("--timeout-s", type=float, default=5.0, help="verifier time limit per answer")
    p.add_argument(
        "--reward-model",
        default=None,
        help="a reward_model run directory: also report best-of-k (its top-scored sample)",
    )
    p.add_argument("--name", default=None, help="row label in the tables (default: the directory name)")
    p.add_argument("--out", default=None, help="output directory (default: <run-dir>/eval or ./eval)")
    p.add_argument("--no-progress", action="store_true")
    return p


def eval_main(argv: Sequence[str]) -> dict:
    """Parse ``argv`` (after ``eval``), evaluate, write the three files; returns results.json's
    content."""
    import jax

    from upt_jax.data import synthetic
    from upt_jax.eval import report
    from upt_jax.eval.evaluate import benchmark_suites, evaluate, synthetic_suites

    args = build_parser().parse_args(list(argv))
    if args.k < 1 or args.n_per_tier < 1:
        raise SystemExit("upt eval: --k and --n-per-tier must be ≥ 1")
    tiers = (
        parse_tiers(args.tiers)
        if args.tiers is not None
        else (() if args.benchmarks or args.data else synthetic.TRAIN_TIERS + synthetic.OOD_TIERS)
    )
    benchmarks = _split(args.benchmarks)
    if not tiers and not benchmarks and not args.data:
        raise SystemExit("upt eval: nothing to evaluate (give --tiers, --benchmarks and/or --data)")

    t0 = time.time()
    if args.run_dir:
        from upt_jax.train.run_model import load_run_model

        model, tok, config, step = load_run_model(args.run_dir, step=args.step, tokenizer=args.tokenizer)
        template = args.template or config.data.get("template", "zero")
        system_prompt = args.system_prompt if args.system_prompt is not None else config.data.get("system_prompt")
        source = {"run_dir": os.path.abspath(args.run_dir), "step": step, "experiment": config.get("name")}
        name = args.name or Path(args.run_dir).resolve().name
        out = args.out or os.path.join(args.run_dir, "eval")
    else:
        model, tok = load_hf_model(args.hf_dir, param_dtype=args.param_dtype, tokenizer=args.tokenizer)
        template, system_prompt = args.template or hf_template(args.hf_dir, tok), args.system_prompt
        source = {"hf_dir": os.path.abspath(args.hf_dir)}
        name = args.name or Path(args.hf_dir).resolve().name
        out = args.out or "eval"
    load_s = time.time() - t0

    suites = {}
    if tiers:
        suites.update(synthetic_suites(tiers, args.n_per_tier, args.data_seed))
    if benchmarks:
        try:
            suites.update(benchmark_suites(benchmarks, args.benchmark_limit))
        except KeyError as e:
            raise SystemExit(f"upt eval: {e.args[0]}") from None
    if args.data:
        suites.update(data_suites(args.data, verifier=args.verifier, need_answer=not args.reward))
    settings = dict(
        k=args.k,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        template=template,
        system_prompt=system_prompt,
        seed=args.seed,
        data_seed=args.data_seed,
        n_per_tier=args.n_per_tier,
        tiers=list(tiers),
        benchmarks=list(suites)[len(tiers) :],
        benchmark_limit=args.benchmark_limit,
        batch_questions=args.batch_questions,
        data=list(args.data or []),
        reward=list(args.reward or []),
        reward_weights=args.reward_weights,
    )
    scorer = None
    if args.reward_model:
        from upt_jax.train.reward_scorers import LearnedReward

        scorer = LearnedReward(args.reward_model, pad_id=tok.pad_id)
    reward_fns = None
    if args.reward:
        from upt_jax.rewards.functions import RewardFunctions

        reward_fns = RewardFunctions(args.reward, args.reward_weights, timeout_s=args.timeout_s, where="--reward")
    completions: list[dict] = []
    try:
        results = evaluate(
            model,
            tok,
            suites,
            k=args.k,
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            key=jax.random.key(args.seed),
            template=template,
            system_prompt=system_prompt,
            batch_questions=args.batch_questions,
            timeout_s=args.timeout_s,
            progress=not args.no_progress,
            scorer=scorer,
            reward_fns=reward_fns,
            completions=completions,
        )
    finally:
        if reward_fns is not None:
            reward_fns.close()
    from upt_jax.data import tasks

    ood_suites = [t for t in tiers if tasks.task_of(t).level(t) == "ood"]
    id_suites = [t for t in tiers if t not in ood_suites]
    runs = {name: results}
    summary = {
        "avg@k": {s: r.avg_at_k for s, r in results.items()},
        f"pass@{args.k}": {s: r.pass_at_k[args.k] for s, r in results.items()},
        **({f"best_of_{args.k}": {s: r.best_of_k for s, r in results.items()}} if scorer is not None else {}),
    }
    for label, members in (("id", id_suites), ("ood", ood_suites)):
        if members:
            summary[f"{label}_avg@k"] = sum(results[s].avg_at_k for s in members) / len(members)
            summary[f"{label}_pass@{args.k}"] = sum(results[s].pass_at_k[args.k] for s in members) / len(members)
    payload = {
        "name": name,
        "source": source,
        "settings": settings,
        "summary": summary,
        "results": results,
        "seconds": {"load": round(load_s, 2), "total": round(time.time() - t0, 2)},
        "jax": {"version": jax.__version__, "backend": jax.default_backend()},
    }

    os.makedirs(out, exist_ok=True)
    report.write_json(os.path.join(out, "results.json"), payload)
    with open(os.path.join(out, "completions.jsonl"), "w") as f:  # every sample: prompt, completion, reward
        f.writelines(json.dumps(c, ensure_ascii=False, default=str) + "\n" for c in completions)
    groups = dict(id_suites=id_suites or None, ood_suites=ood_suites or None)
    md = [
        f"# Evaluation: {name}",
        "",
        f"Source: `{json.dumps(source)}`  ",
        f"k={args.k}, temperature={args.temperature}, top_p={args.top_p}, "
        f"max_new_tokens={args.max_new_tokens}, template={template}, seed={args.seed}, "
        f"data_seed={args.data_seed}",
        "",
        f"## avg@{args.k} (%)",
        "",
        report.results_table(runs, metric="avg@k", **groups),
        f"## pass@{args.k} (%)",
        "",
        report.results_table(runs, metric=f"pass@{args.k}", **groups),
        "## Per suite",
        "",
        report.suite_table(results),
    ]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(md))
    report.plot_pass_at_k(runs, os.path.join(out, "passk.png"), title=name)
    print(report.results_table(runs, metric="avg@k", **groups))
    print(f"wrote {out}/results.json, results.md, passk.png, completions.jsonl in {time.time() - t0:.1f}s")
    return json.loads(json.dumps(report.results_to_json(payload)))
