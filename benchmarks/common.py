"""Shared helpers: the same random Qwen2 model in transformers (PyTorch CPU) and upt_jax, and the
Tunix side (``benchmarks/tunix_bench.py`` run in ``.venv-tunix`` as a subprocess; JSON back)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile

from upt_jax.models import PRESETS

HERE = os.path.dirname(os.path.abspath(__file__))
TUNIX_VENV = os.path.join(os.path.dirname(HERE), ".venv-tunix")
TUNIX_SCRIPT = os.path.join(HERE, "tunix_bench.py")
TUNIX_NOT_RUN = "not run (make bench-tunix-env)"
TUNIX_SKIPPED = "skipped (--no-tunix)"
TUNIX_RESULT_PREFIX = "TUNIX_RESULT "  # the line benchmarks/tunix_bench.py prints its result on


def hf_qwen2(name: str, seed: int = 0):
    """A random ``transformers`` Qwen2 model with the preset's shape (fp32, eval mode)."""
    import torch
    import transformers

    p = PRESETS[name]
    cfg = transformers.Qwen2Config(
        vocab_size=p["vocab_size"],
        hidden_size=p["hidden_size"],
        intermediate_size=p["intermediate_size"],
        num_hidden_layers=p["num_layers"],
        num_attention_heads=p["num_heads"],
        num_key_value_heads=p["num_kv_heads"],
        max_position_embeddings=4096,
        tie_word_embeddings=p.get("tie_word_embeddings", False),
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    return transformers.Qwen2ForCausalLM(cfg).float().eval()


def same_model_in_jax(hf_model, **load_kw):
    """Save the transformers model to a temp dir and load it into upt_jax (identical weights)."""
    from upt_jax.models import load_hf_checkpoint

    with tempfile.TemporaryDirectory() as d:
        hf_model.save_pretrained(d)
        return load_hf_checkpoint(d, **load_kw)


def run_tunix_on(hf_model, task: dict, **kw) -> dict:
    """``run_tunix`` with the transformers model's weights saved for Tunix to load (``weights_dir``),
    so all three sides run identical weights. Nothing is saved when Tunix's venv is missing."""
    if not os.path.exists(kw.get("python") or os.path.join(TUNIX_VENV, "bin", "python")):
        return {"status": TUNIX_NOT_RUN}
    with tempfile.TemporaryDirectory() as d:
        hf_model.save_pretrained(d)
        return run_tunix(dict(task, weights_dir=d), **kw)


def hpt_bench_config(
    prefix: str,
    *,
    experiment: str = "hpt",
    steps: int = 1,
    questions: int = 8,
    n: int = 8,
    new_tokens: int = 64,
    **rollout,
):
    """The benchmarks' HPT step: ``experiments.<experiment>`` with ``questions × n`` rollouts of
    ``new_tokens``, a fresh temp run dir, no checkpoints or progress bar; ``rollout`` overrides."""
    import importlib

    c = importlib.import_module(f"experiments.{experiment}").get_config()
    c.run_dir = tempfile.mkdtemp(prefix=prefix)
    c.train.steps = steps
    c.train.questions_per_step = questions
    c.rollout.n = n
    c.rollout.max_new_tokens = new_tokens
    for k, v in rollout.items():
        setattr(c.rollout, k, v)
    c.checkpoint.every = 0
    c.log.progress = False
    return c


def set_torch_threads():
    import torch

    torch.set_num_threads(os.cpu_count() or 1)


def model_dict(cfg) -> dict:
    """The Qwen2 shape of a upt_jax ``ModelConfig`` as plain JSON (what the Tunix side builds)."""
    keys = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_layers",
        "num_heads",
        "num_kv_heads",
        "head_dim",
        "rope_theta",
        "rms_norm_eps",
        "tie_word_embeddings",
    )
    return {k: getattr(cfg, k) for k in keys}


def parse_tunix_output(stdout: str) -> dict:
    """The result dict from ``tunix_bench.py``'s stdout: its last ``TUNIX_RESULT {json}`` line.

    Anything else Tunix or absl printed is ignored. Returns ``{"status": "failed: ..."}`` when no
    such line (or no JSON object on it) is there.
    """
    for line in reversed(stdout.splitlines()):
        if line.startswith(TUNIX_RESULT_PREFIX):
            try:
                res = json.loads(line[len(TUNIX_RESULT_PREFIX) :])
            except ValueError as e:
                return {"status": f"failed: bad result line ({e})"}
            if not isinstance(res, dict):
                return {"status": "failed: result is not a JSON object"}
            res.setdefault("status", "ok")
            return res
    return {"status": "failed: no result line"}


def run_tunix(task: dict, *, python: str | None = None, script: str = TUNIX_SCRIPT, timeout: float = 3600) -> dict:
    """Run one Tunix benchmark task in the Tunix venv (a subprocess) and return its result dict.

    ``task`` goes to the script as JSON on stdin. ``python`` defaults to ``.venv-tunix/bin/python``;
    when that is missing the result is ``{"status": TUNIX_NOT_RUN}`` and nothing runs. A failing
    or hanging run gives ``{"status": "failed: ..."}`` rather than an exception, so the upt_jax
    side of a benchmark still reports. ``status`` is ``"ok"`` on success.
    """
    python = python or os.path.join(TUNIX_VENV, "bin", "python")
    if not os.path.exists(python):
        return {"status": TUNIX_NOT_RUN}
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    try:
        proc = subprocess.run(
            [python, script],
            input=json.dumps(task),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=os.path.dirname(HERE),
        )
    except subprocess.TimeoutExpired:
        return {"status": f"failed: timed out after {timeout:g} s"}
    except OSError as e:
        return {"status": f"failed: {e}"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or [""])[-1]
        return {"status": f"failed (exit {proc.returncode}): {tail[-200:]}"}
    return parse_tunix_output(proc.stdout)


def run_configs(configs, bench, json_path: str | None = None) -> list[dict]:
    """``bench(config)`` for each config name: each row printed as a JSON line (and appended to
    ``json_path`` when given) as soon as it is measured; returns the rows."""
    rows = []
    for c in configs:
        r = bench(c)
        rows.append(r)
        print(json.dumps(r), flush=True)
        if json_path:
            with open(json_path, "a") as f:
                f.write(json.dumps(r) + "\n")
    return rows


def tunix_cells(row: dict) -> tuple[str, str]:
    """The "Tunix tok/s" and "upt_jax/Tunix" table cells of a benchmark row: the numbers, or the
    reason there are none (``row["tunix_status"]``, e.g. "not run (make bench-tunix-env)")."""
    if row.get("tunix_status") != "ok":
        return row.get("tunix_status") or TUNIX_NOT_RUN, "–"
    return str(row["tunix_tokens_per_s"]), f"{row['tunix_ratio']}×"


def tunix_fields(res: dict, upt_jax_tps: float) -> dict:
    """A ``run_tunix`` result as a benchmark row's ``tunix_*`` fields (``None`` where not run)."""
    ok = res.get("status") == "ok"
    return dict(
        tunix_status=res.get("status"),
        tunix_tokens_per_s=res["tokens_per_s"] if ok else None,
        tunix_compile_s=res.get("compile_s") if ok else None,
        tunix_ratio=round(upt_jax_tps / res["tokens_per_s"], 2) if ok else None,
        tunix_versions=res.get("versions"),
    )


def compiled_memory(compiled) -> dict[str, int]:
    """XLA's ``memory_analysis()`` of a compiled program, per device, in bytes: ``argument``,
    ``output``, ``alias`` (outputs written into donated arguments), ``temp``, ``code`` (generated
    code) and ``peak ≈ argument + output − alias + temp``."""
    mem = compiled.memory_analysis()
    sizes = dict(
        argument=mem.argument_size_in_bytes,
        output=mem.output_size_in_bytes,
        alias=mem.alias_size_in_bytes,
        temp=mem.temp_size_in_bytes,
        code=mem.generated_code_size_in_bytes,
    )
    sizes["peak"] = sizes["argument"] + sizes["output"] - sizes["alias"] + sizes["temp"]
    return {k: int(v) for k, v in sizes.items()}


def in_turns(call_a, call_b, rounds: int, warmup: int = 2) -> tuple[list[float], list[float]]:
    """Each call's own seconds (``call_a()`` and ``call_b()`` return them), timed in turns: one call
    of each per round after ``warmup`` untimed rounds, which goes first alternating from round to
    round, so that both see the same load on a shared host. ``(A's seconds, B's seconds)``."""
    if rounds < 2:
        raise ValueError("rounds must be ≥ 2 (an interquartile range needs two)")
    for _ in range(warmup):
        call_a(), call_b()
    ta, tb = [], []
    for r in range(rounds):
        if r % 2:
            b = call_b()
            a = call_a()
        else:
            a = call_a()
            b = call_b()
        ta.append(a)
        tb.append(b)
    return ta, tb


def ratio_stats(ta: list[float], tb: list[float]) -> tuple[float, list[float]]:
    """The median of the per-round ratios ``A / B`` and their interquartile range (inclusive)."""
    ratios = [a / b for a, b in zip(ta, tb)]
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return round(statistics.median(ratios), 3), [round(q1, 3), round(q3, 3)]


def paired_cell(row: dict) -> str:
    """A table's paired-ratio cell, ``"1.04× (0.98–1.10)"`` (`ratio_stats`), or "–" for a row without it."""
    if row.get("paired_ratio") is None:
        return "–"
    lo, hi = row["paired_iqr"]
    return f"{row['paired_ratio']}× ({lo}–{hi})"
