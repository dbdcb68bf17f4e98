"""Command-line entry points.

    upt demo [--run-dir runs/testbed_demo] [--plumbing]
    upt train --config experiments/grpo.py[:ARG] [--config.train.steps=10 ...]   (or --config grpo[:ARG])
    upt train --config grpo --help          # every config key: type, allowed values, default, doc
    upt pipeline --config experiments/sft_then_grpo.py [--config.sft.train.steps=5 ...]
    upt eval --run-dir runs/NAME | --hf-dir DIR [--tiers ...] [--benchmarks ...] [--k 8] [--out DIR]
    upt export RUN_DIR OUT_DIR [--step N] [--dtype bfloat16] [--merge-lora]   # a Hugging Face directory

train, pipeline and eval take ``-v`` / ``--verbose``: every library's INFO log lines (Orbax,
JAX, transformers), which are off by default.

Exit status of train and pipeline: 0 when done, and also when stopped by SIGTERM/SIGINT after
saving a checkpoint (one line says so; rerunning the same command resumes; see
`upt_jax.train.preemption`); 1 with one line naming the directory and its free space when a
checkpoint could not be written; 2 for a config value outside its key's domain.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from upt_jax.config_files import (
    experiment_names,
    load_config_file,
    resolve_config_file,  # noqa: F401
    shipped_experiments_dir,
)


def comparison_demo(run_dir: str | None = None) -> dict:
    """``make demo``: the reduced testbed comparison (`experiments/testbed.py:demo`): from the
    shipped ``arith_hint`` base model (no base training), GRPO on its RL tier (with replay), GRPO's
    SFT control and SFT on its SFT tiers under one budget; evaluate every tier on the base's
    questions, print the paired table and one sentence naming the arms that beat the base by more
    than 2 SE (or saying none did); ``<run_dir>/summary.json`` holds the paired differences.
    Returns the comparison's results."""
    setup_logging([])  # Orbax's absl lines (e.g. "Given directory is read only" per base-model load) off
    logging.getLogger("upt_jax").setLevel(logging.WARNING)  # the demo prints its own progress and table
    from upt_jax.studies.comparison import run_comparison, with_sft_controls
    from upt_jax.studies.comparison_report import beats_sentence

    config = load_config(["--config", "testbed:demo"])  # the shipped config file, loaded by path
    if run_dir:  # the demo's base is the shipped one: nothing else moves with the run directory
        config.run_dir = run_dir
    results = run_comparison(config)
    print(beats_sentence(with_sft_controls(config), results["paired"]), flush=True)  # the controls' labels
    print(f"paired differences: {os.path.join(config.run_dir, 'summary.json')}", flush=True)
    return results


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
    cfg = preset(
        "tiny",
        vocab_size=tok.vocab_size,
        num_layers=2,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_id,
        bos_token_id=tok.bos_id,
        pad_token_id=tok.pad_id,
    )
    print(
        f"[1/4] building a {cfg.num_params() / 1e6:.2f}M-parameter {cfg.model_type} model "
        f"(vocab {cfg.vocab_size}, {cfg.num_layers} layers) on {jax.devices()[0].platform}"
    )
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
        batch[i, width - len(p) :], mask[i, width - len(p) :] = p, 1
    a, _ = model(jnp.asarray(batch), attention_mask=jnp.asarray(mask))
    b, _ = loaded(jnp.asarray(batch), attention_mask=jnp.asarray(mask))
    diff = float(jnp.max(jnp.abs(a - b)))
    if diff != 0.0:
        raise RuntimeError(f"reloaded checkpoint differs from the saved model (max |Δlogits| = {diff})")
    print(f"[3/4] reloaded; logits identical to the saved model (max |Δ| = {diff})")

    sampler = Sampler(loaded, pad_id=tok.pad_id)
    params = SamplingParams(
        max_new_tokens=max_new_tokens, temperature=1.0, top_p=0.95, n=2, stop_token_ids=tok.stop_ids
    )
    out = sampler.generate(prompts, jax.random.key(seed), params)
    again = sampler.generate(prompts, jax.random.key(seed + 1), params)
    print(
        f"[4/4] sampled {params.n} continuations of {len(prompts)} prompts: "
        f"compile {out.compile_s:.2f}s, then {again.new_tokens() / again.run_s:.0f} new tokens/s "
        f"(second call compiled again: {again.compile_s > 0})"
    )
    for i in range(0, len(out.lengths), params.n):
        q = questions[out.prompt_index[i]]
        text = tok.decode(out.tokens[i, : out.lengths[i]])
        print(f"  Q: {q['question']!r}  answer {q['answer']}  →  untrained model: {text[:40]!r}")
    summary = dict(
        params=cfg.num_params(),
        checkpoint=ckpt,
        max_abs_logit_diff=diff,
        compile_s=round(out.compile_s, 3),
        tokens_per_s=round(again.new_tokens() / again.run_s, 1),
        recompiled=again.compile_s > 0,
    )
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
        logging.getLogger("absl").addFilter(_orbax_tracebacks)
    return argv


def _orbax_tracebacks(record: logging.LogRecord) -> bool:
    """Drops Orbax's error records that carry a traceback (without ``-v``): they are a failed
    background save logged from each of Orbax's threads, tens of lines each, and the same error
    reaches upt_jax, which reports it once (``CheckpointSaveError``: step, directory, free space)."""
    return not (record.exc_info and f"{os.sep}orbax{os.sep}" in record.pathname)


def _config_spec(argv: list[str]) -> tuple[str | None, list[str]]:
    """``(the --config value, the other arguments)``."""
    rest, spec, i = [], None, 0
    while i < len(argv):
        a = argv[i]
        if a in ("--config", "-config") and i + 1 < len(argv):
            spec, i = argv[i + 1], i + 2
            continue
        if a.startswith(("--config=", "-config=")):
            spec = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    return spec, rest


def open_overrides(args: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Splits ``--config.PATH=VALUE`` overrides of open-dict entries (``recipe.hparams.*``,
    ``model.overrides.*``, ``data.fields.*``: keys ml_collections cannot know) from the rest."""
    from upt_jax.train import schema

    mine, rest, i = [], [], 0
    while i < len(args):
        a = args[i]
        name, eq, value = a.partition("=")
        path = name[len("--config.") :] if name.startswith("--config.") else None
        if path is not None and schema.open_key(path):
            if not eq:  # --config.PATH VALUE, or a bare boolean --config.PATH
                if i + 1 < len(args) and not args[i + 1].startswith("-"):
                    value, i = args[i + 1], i + 1
                else:
                    value = "true"
            mine.append((path, value))
        else:
            rest.append(a)
        i += 1
    return mine, rest


def load_config(argv: list[str]):
    """The config of ``--config FILE_OR_NAME[:ARG]`` with the ``--config.key=value`` overrides of
    ``argv`` (not ``sys.argv``) applied. ``FILE_OR_NAME``: see `resolve_config_file`. Overrides of
    a recipe's hyper-parameters (``--config.recipe.hparams.kl_coef=0.04``), of ``model.overrides``
    and ``data.fields`` entries are typed by the schema (``upt_jax.train.schema``) and may name any
    key it lists, set in the file or not."""
    from upt_jax.train import schema

    spec, rest = _config_spec(list(argv))
    if spec is None:
        raise SystemExit(
            "upt: --config FILE or a shipped experiment's name (e.g. --config grpo) is required; "
            "--help lists every config key"
        )
    path = resolve_config_file(spec)
    entries, rest = open_overrides(rest)
    config = load_config_file(path, rest)  # by path (upt_jax.config_files)
    for key, value in entries:  # after the rest: a recipe's hyper-parameters follow recipe.name
        schema.apply_override(config, key, value)
    return config


def _wants_help(argv: list[str]) -> bool:
    return any(a in ("--help", "-h", "--helpfull", "-help") for a in argv)


def config_help(command: str, argv: list[str]) -> str:
    """``upt train|pipeline [--config F] --help``: every config key (type, allowed values, the
    default in this config, a one-line doc); without ``--config``, ``base_config()``'s and every
    recipe's hyper-parameters."""
    from upt_jax.train import schema

    argv = [a for a in argv if not _wants_help([a])]
    usage = (
        f"usage: upt {command} --config FILE_OR_NAME[:ARG] [--config.KEY=VALUE ...]\n"
        "  FILE_OR_NAME: a config file (from the working directory) or a shipped experiment: "
        + ", ".join(experiment_names(shipped_experiments_dir()))
        + "\n"
    )
    if _config_spec(argv)[0] is None:
        return usage + "\nconfig keys (base_config(); each experiment changes some defaults):\n" + schema.describe()
    config = load_config(argv)
    return usage + f"\nconfig keys of {_config_spec(argv)[0]} (KEY=DEFAULT  TYPE: ALLOWED):\n" + schema.describe(config)


def train_command(argv: list[str]) -> int:
    """``upt train``: run (or resume) one experiment; writes its run directory."""
    if _wants_help(argv):
        print(config_help("train", argv))
        return 0
    argv = setup_logging(argv)
    from upt_jax.dispatch import train
    from upt_jax.train import distributed
    from upt_jax.train.preemption import Preempted

    config = load_config(argv)
    distributed.initialize()  # multi-process runs (SLURM, TPU slices, UPT_COORDINATOR); else nothing
    t0 = time.time()
    stopped = None
    try:
        history = train(config)
    except Preempted as e:  # a checkpoint of the step reached is committed: not a failure
        history, stopped = e.history, {"signal": e.signal, "step": e.step}
    last = history[-1] if history else {}
    print(
        json.dumps(
            {
                "run_dir": config.run_dir,
                "steps_run": len(history),
                "last": {k: last[k] for k in ("step", "loss", "reward/mean") if k in last},
                "seconds": round(time.time() - t0, 1),
                **({"stopped": stopped} if stopped else {}),
            }
        )
    )
    return 0


def pipeline_command(argv: list[str]) -> int:
    """``upt pipeline``: run the stages of a pipeline config in order (resumable)."""
    if _wants_help(argv):
        print(config_help("pipeline", argv))
        return 0
    argv = setup_logging(argv)
    from upt_jax import dispatch
    from upt_jax.train import distributed
    from upt_jax.train.pipeline import run_pipeline
    from upt_jax.train.preemption import Preempted

    config = load_config(argv)
    distributed.initialize()
    try:
        reports = run_pipeline(config, run=dispatch.train)
    except Preempted as e:  # the stage's checkpoint is committed; the next stages did not start
        print(json.dumps({"stopped": {"signal": e.signal, "step": e.step}}))
        return 0
    print(json.dumps(reports, indent=2))
    return 0


def eval_command(argv: list[str]) -> int:
    """``upt eval``: pass@k / avg@k of a run directory's checkpoint or a HF directory
    (writes results.json, results.md, passk.png; ``upt eval --help`` lists the options)."""
    argv = setup_logging(argv)
    from upt_jax.eval_cli import eval_main

    eval_main(argv)
    return 0


def export_command(argv: list[str]) -> int:
    """``upt export RUN_DIR OUT_DIR [--step N] [--dtype bfloat16] [--merge-lora]``: a run directory's
    checkpoint as a Hugging Face directory (weights, tokenizer, chat template, generation_config.json;
    `upt_jax.train.export`); a LoRA run's adapters in the PEFT layout, or merged (``--merge-lora``)."""
    argv = setup_logging(argv)
    p = argparse.ArgumentParser(
        prog="upt export",
        description="write a Hugging Face directory "
        "(config.json, safetensors, tokenizer, chat template, generation_config.json) "
        "from an upt_jax run directory's checkpoint",
    )
    p.add_argument("run_dir", help="an upt_jax run directory")
    p.add_argument("out_dir", help="the Hugging Face directory to write")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest usable one)")
    p.add_argument(
        "--dtype",
        default=None,
        choices=("float32", "bfloat16", "float16"),
        help="stored dtype of the weights (default: the params' own)",
    )
    p.add_argument(
        "--merge-lora",
        action="store_true",
        help="a LoRA run: the full model with the adapters merged into the base weights "
        "(default: the adapters in the PEFT layout, adapter_config.json + adapter_model.safetensors)",
    )
    args = p.parse_args(argv)
    from upt_jax.train.export import export_run

    out = export_run(args.run_dir, args.out_dir, step=args.step, dtype=args.dtype, merge_lora=args.merge_lora)
    print(json.dumps({"exported": os.path.abspath(out), "files": sorted(os.listdir(out))}))
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) > 1 and argv[0] in _VERBOSE_FLAGS:  # `upt -v train ...` as `upt train -v ...`
        argv = [argv[1], argv[0], *argv[2:]]
    if argv and argv[0] in ("train", "pipeline"):
        try:
            return (train_command if argv[0] == "train" else pipeline_command)(argv[1:])
        except (ValueError, RuntimeError) as e:
            # imported only now: importing upt_jax.train first would install absl's root log handler
            # before the command's logging set-up, silencing every INFO line of the run
            from upt_jax.train.checkpoint import CheckpointSaveError
            from upt_jax.train.schema import ConfigError

            if isinstance(e, CheckpointSaveError):  # e.g. a full disk: one line, no traceback
                print(f"upt {argv[0]}: {e}", file=sys.stderr)
                return 1
            if not isinstance(e, ConfigError):
                raise
            print(f"upt {argv[0]}: {e}", file=sys.stderr)  # a config value outside its key's domain
            return 2
    if argv and argv[0] == "eval":
        return eval_command(argv[1:])
    if argv and argv[0] == "export":
        return export_command(argv[1:])
    parser = argparse.ArgumentParser(prog="upt", description="upt_jax: unified post-training in JAX")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("pipeline", help="run a stage pipeline: upt pipeline --config experiments/sft_then_grpo.py")
    sub.add_parser(
        "eval",
        help="evaluate a checkpoint: upt eval --run-dir runs/NAME | --hf-dir DIR "
        "[--tiers ...] [--benchmarks ...] [--k 8] [--out DIR]",
    )
    sub.add_parser(
        "export",
        help="a run's checkpoint as a Hugging Face directory: upt export RUN_DIR OUT_DIR [--step N] [--dtype bfloat16]",
    )
    sub.add_parser(
        "train",
        help="run an experiment: upt train --config experiments/NAME.py (or NAME) "
        "[--config.key=value ...]; upt train --config NAME --help lists the keys",
    )
    p_demo = sub.add_parser(
        "demo",
        help="the reduced testbed comparison from the shipped arith_hint base "
        "(--plumbing: export → reload → sample a random model)",
    )
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
