"""Command-line entry points.

    upt demo [--run-dir runs/paper_table_demo] [--plumbing]
    upt train --config experiments/grpo.py[:ARG] [--config.train.steps=10 ...]
    upt pipeline --config experiments/sft_then_grpo.py [--config.sft.train.steps=5 ...]
    upt eval --run-dir runs/NAME | --hf-dir DIR [--tiers ...] [--benchmarks ...] [--k 8] [--out DIR]

train, pipeline and eval take ``-v`` / ``--verbose``: every library's INFO log lines (Orbax,
JAX, transformers), which are off by default.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time


def comparison_demo(run_dir: str | None = None) -> None:
    """``make demo``: the reduced paper comparison (`experiments/paper_table.py:demo`): train the
    tiny base model (or reuse it), then SFT, GRPO, SFT→GRPO, LUFFY, SRFT and HPT from it under
    one budget, evaluate every tier, print the table and the paths of the plots."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from experiments import paper_table
    from upt_jax.train.trainer import train

    config = paper_table.get_config("demo")
    if run_dir:
        config.run_dir = run_dir
    train(config)


def demo(run_dir: str = "runs/demo", seed: int = 0, max_new_tokens: int = 48) -> dict:
    """End to end on the built-in pieces: build a tiny Qwen2-shaped model sized to the built-in
    tokenizer, export it as a Hugging Face checkpoint, load it back (checking the logits are
    identical), and sample answers to synthetic arithmetic questions with the compiled sampler.

    The model is untrained (random weights): the demo shows the plumbing, not the answers.
    Returns a summary dict (also written to ``<run_dir>/demo.json``).
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from upt_jax.data import char_tokenizer, synthetic
    from upt_jax.data.templates import prompt_ids
    from upt_jax.models import init_model, load_hf_checkpoint, preset, save_hf_checkpoint
    from upt_jax.sampling import Sampler, SamplingParams

    os.makedirs(run_dir, exist_ok=True)
    tok = char_tokenizer()
    cfg = preset("tiny", vocab_size=tok.vocab_size, num_layers=2, tie_word_embeddings=True,
                 eos_token_id=tok.eos_id, bos_token_id=tok.bos_id, pad_token_id=tok.pad_id)
    print(f"[1/4] building a {cfg.num_params() / 1e6:.2f}M-parameter {cfg.model_type} model "
          f"(vocab {cfg.vocab_size}, {cfg.num_layers} layers) on {jax.devices()[0].platform}")
    model = init_model(cfg, seed)

    ckpt = os.path.join(run_dir, "hf_checkpoint")
    save_hf_checkpoint(model, ckpt)
    tok.hf.save_pretrained(ckpt)
    print(f"[2/4] exported to {ckpt}: {sorted(os.listdir(ckpt))}")

    loaded = load_hf_checkpoint(ckpt)
    questions = synthetic.generate("add_2", 4, seed=seed)
    prompts = [prompt_ids(tok, q["question"], "zero") for q in questions]
    width = max(map(len, prompts))
    batch = np.zeros((len(prompts), width), np.int32)
    mask = np.zeros_like(batch)
    for i, p in enumerate(prompts):
        batch[i, width - len(p):], mask[i, width - len(p):] = p, 1
    a, _ = model(jnp.asarray(batch), attention_mask=jnp.asarray(mask))
    b, _ = loaded(jnp.asarray(batch), attention_mask=jnp.asarray(mask))
    diff = float(jnp.max(jnp.abs(a - b)))
    if diff != 0.0:
        raise RuntimeError(f"reloaded checkpoint differs from the saved model (max |Δlogits| = {diff})")
    print(f"[3/4] reloaded; logits identical to the saved model (max |Δ| = {diff})")

    sampler = Sampler(loaded, pad_id=tok.pad_id)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0, top_p=0.95, n=2,
                            stop_token_ids=tok.stop_ids)
    out = sampler.generate(prompts, jax.random.key(seed), params)
    again = sampler.generate(prompts, jax.random.key(seed + 1), params)
    print(f"[4/4] sampled {params.n} continuations of {len(prompts)} prompts: "
          f"compile {out.compile_s:.2f}s, then {again.new_tokens() / again.run_s:.0f} new tokens/s "
          f"(second call compiled again: {again.compile_s > 0})")
    for i in range(0, len(out.lengths), params.n):
        q = questions[out.prompt_index[i]]
        text = tok.decode(out.tokens[i, : out.lengths[i]])
        print(f"  Q: {q['question']!r}  answer {q['answer']}  →  untrained model: {text[:40]!r}")
    summary = dict(params=cfg.num_params(), checkpoint=ckpt, max_abs_logit_diff=diff,
                   compile_s=round(out.compile_s, 3), tokens_per_s=round(again.new_tokens() / again.run_s, 1),
                   recompiled=again.compile_s > 0)
    with open(os.path.join(run_dir, "demo.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"summary written to {os.path.join(run_dir, 'demo.json')}")
    return summary


_VERBOSE_FLAGS = ("-v", "--verbose")
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(argv: list[str]) -> list[str]:
    """Configure logging for a command and return ``argv`` without ``-v`` / ``--verbose``.

    By default the console shows upt_jax's own INFO lines (resume, where the model's shape and
    tokenizer come from, ...) and other libraries' warnings, but not their chatter: Orbax's
    absl log (dozens of lines per checkpoint, its warnings included; upt_jax reports unusable
    checkpoints itself), JAX's and etils' INFO lines, transformers' advice such as
    "PyTorch was not found". ``-v`` / ``--verbose`` brings back every library's INFO lines.
    """
    verbose = any(a in _VERBOSE_FLAGS for a in argv)
    argv = [a for a in argv if a not in _VERBOSE_FLAGS]
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=_LOG_FORMAT)
    logging.getLogger("upt_jax").setLevel(logging.INFO)
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers is imported
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.set_verbosity_error()
        logging.getLogger("absl").setLevel(logging.ERROR)
    return argv


def load_config(argv: list[str]):
    """Parse ``--config path.py[:arg]`` and ``--config.key=value`` overrides (ml_collections)."""
    from absl import flags
    from ml_collections import config_flags

    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "experiment config file (experiments/NAME.py[:ARG])",
                                    flag_values=fv, lock_config=False)
    fv(["upt"] + list(argv))
    if fv.config is None:
        raise SystemExit("upt train: --config experiments/NAME.py is required")
    return fv.config


def train_command(argv: list[str]) -> int:
    """``upt train``: run (or resume) one experiment; writes its run directory."""
    argv = setup_logging(argv)
    from upt_jax.train import distributed
    from upt_jax.train.trainer import train

    config = load_config(argv)
    distributed.initialize()  # multi-process runs (SLURM, TPU slices, UPT_COORDINATOR); else nothing
    t0 = time.time()
    history = train(config)
    last = history[-1] if history else {}
    print(json.dumps({"run_dir": config.run_dir, "steps_run": len(history),
                      "last": {k: last[k] for k in ("step", "loss", "reward/mean") if k in last},
                      "seconds": round(time.time() - t0, 1)}))
    return 0


def pipeline_command(argv: list[str]) -> int:
    """``upt pipeline``: run the stages of a pipeline config in order (resumable)."""
    argv = setup_logging(argv)
    from upt_jax.train import distributed
    from upt_jax.train.pipeline import run_pipeline

    config = load_config(argv)
    distributed.initialize()
    reports = run_pipeline(config)
    print(json.dumps(reports, indent=2))
    return 0


def eval_command(argv: list[str]) -> int:
    """``upt eval``: pass@k / avg@k of a run directory's checkpoint or a HF directory
    (writes results.json, results.md, passk.png; ``upt eval --help`` lists the options)."""
    argv = setup_logging(argv)
    from upt_jax.eval.run import eval_main

    eval_main(argv)
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) > 1 and argv[0] in _VERBOSE_FLAGS:  # `upt -v train ...` as `upt train -v ...`
        argv = [argv[1], argv[0], *argv[2:]]
    if argv and argv[0] == "train":
        return train_command(argv[1:])
    if argv and argv[0] == "pipeline":
        return pipeline_command(argv[1:])
    if argv and argv[0] == "eval":
        return eval_command(argv[1:])
    parser = argparse.ArgumentParser(prog="upt", description="upt_jax: unified post-training in JAX")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("pipeline", help="run a stage pipeline: upt pipeline --config "
                                    "experiments/sft_then_grpo.py")
    sub.add_parser("eval", help="evaluate a checkpoint: upt eval --run-dir runs/NAME | --hf-dir DIR "
                                "[--tiers ...] [--benchmarks ...] [--k 8] [--out DIR]")
    sub.add_parser("train", help="run an experiment: upt train --config experiments/NAME.py "
                                 "[--config.key=value ...]")
    p_demo = sub.add_parser("demo", help="the reduced paper comparison on the built-in synthetic task "
                                         "(--plumbing: export → reload → sample a random model)")
    p_demo.add_argument("--run-dir", default=None)
    p_demo.add_argument("--seed", type=int, default=0)
    p_demo.add_argument("--plumbing", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "demo":
        t0 = time.time()
        if args.plumbing:
            demo(args.run_dir or "runs/demo", args.seed)
        else:
            comparison_demo(args.run_dir)
        print(f"done in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
