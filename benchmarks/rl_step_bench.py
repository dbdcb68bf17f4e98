"""One whole GRPO step, upt_jax against TRL's ``GRPOTrainer``, side by side; the HPT step beside it.

    python -m benchmarks.rl_step_bench                          # tiny + small, both ISAs
    python -m benchmarks.rl_step_bench --config tiny --isa native --rounds 2

The step: 4 prompts of 32 random ids × 8 rollouts of exactly 64 new tokens at T = 1, a reward per
rollout, then one clipped GRPO update (ε = 0.2, β = 0, sequence-mean-token-mean, group-normalised
advantages) with AdamW (lr 1e-5) and global-norm clipping on the 32 × 96 rows. Same random Qwen2
weights (the ``tiny`` and ``small`` presets' shapes, ``benchmarks.common.hf_qwen2``), same prompts,
same reward (``benchmarks.trl_bench.parity_reward``, in TRL's process and upt_jax's reward workers), fp32, CPU.

* upt_jax: a ``Trainer`` built from ``experiments/grpo.py`` (``model.init=hf`` on the saved weights,
  a word-level tokenizer whose tokens are the ids, ``data.template=plain``, ``reward.functions``);
  a step is ``Trainer.train_step()`` (rollout, reward, update; the tokenizer's EOS id is one prompts
  never hold, so a rollout may stop early only if the random model samples it: counted).
* TRL (``benchmarks/trl_bench.py`` in ``.venv-trl``, ``make bench-trl-env``; a subprocess in
  lockstep): ``GRPOTrainer.train`` with ``min_new_tokens`` = 64.
* upt_jax with ``train.share_prompt`` (GRPO): each group's 32-token prompt runs through the decoder
  once in the update, its 8 rollouts continuing from its keys and values (the same loss up to float
  reordering): a column of its own.
* HPT (upt_jax only): ``experiments/hpt.py`` on the same data with a 64-token demonstration per
  question: 4 × (8 rollouts + 1 demonstration) rows.

``--cores 1``: both sides pinned to one core (on a host shared with other jobs PyTorch's OpenMP
threads wait on each other: 2 threads can be 10-20× slower than 1 there, XLA's pool much less so).
Two warm-up steps per side (compiles, allocator), then ``--rounds`` rounds, each one step of every
side in turn; the table has the median step. ``--isa avx2`` restricts both sides to AVX2 (`ISA_ENV`:
XLA's ``--xla_cpu_max_isa=AVX2`` with its dots through oneDNN under ``ONEDNN_MAX_CPU_ISA=AVX2``,
PyTorch's ``ATEN_CPU_CAPABILITY=avx2`` and ``MKL_ENABLE_INSTRUCTIONS=AVX2``; before session 15 the
matmul libraries of both sides ignored the restriction), each ISA in a fresh process. The sampler
line: the same 2,048 new tokens as 4 prompts × 8 samples and as 32 prompts × 1, and 4 × 8 padded
as before to 8 prompts (``batch_bucket=64``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TRL_VENV = os.path.join(ROOT, ".venv-trl")
TRL_SCRIPT = os.path.join(HERE, "trl_bench.py")
# Restricting a process to AVX2 on an AVX-512 host. XLA's ``--xla_cpu_max_isa`` reaches its own
# code generation but not its matmul libraries (YNNPACK and Eigen pick AVX-512 at run time: 146-190
# GFLOP/s on one core with or without it), nor does ``ATEN_CPU_CAPABILITY`` reach PyTorch's MKL
# (181-186 GFLOP/s). So XLA's dots go to oneDNN (``--xla_cpu_use_onednn``, not YNNPACK; oneDNN's
# dot *fusions* fail to compile the trainer's step), which ``ONEDNN_MAX_CPU_ISA`` limits, and MKL gets
# ``MKL_ENABLE_INSTRUCTIONS``: 110-117 GFLOP/s on both sides, an AVX2 core's rate. Each side's
# matmul peak under the environment is in the table, to show the restriction held; dots that
# oneDNN does not take (if any) would still run XLA's own kernels.
ISA_ENV = {
    "native": {},
    "avx2": {
        "XLA_FLAGS": "--xla_cpu_max_isa=AVX2 --xla_cpu_use_onednn=true --xla_cpu_experimental_ynn_fusion_type=",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    },
}
RESULT = "RL_STEP_RESULT "
PROMPTS, N, NEW, PROMPT_LEN = 4, 8, 64, 32


def write_model_dir(config: str, d: str, seed: int = 0) -> int:
    """The random Qwen2 of ``config`` in ``d/model`` and a word-level tokenizer (token ``"i"`` is id
    ``i``; ``<pad>`` 0, ``<eos>`` the last id) in ``d/tokenizer``; returns the vocabulary size. Apart: next to a
    Qwen2 ``config.json``, ``AutoTokenizer`` would load Qwen2's tokenizer class (its own
    pre-tokenizer: every digit a token) instead of this one."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    from benchmarks.common import hf_qwen2

    hf = hf_qwen2(config, seed)
    v = hf.config.vocab_size
    words = {"<pad>": 0, "<eos>": v - 1, **{str(i): i for i in range(1, v - 1)}}  # specials: no digit string
    wl = Tokenizer(models.WordLevel(words, unk_token="<pad>"))
    wl.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=wl, pad_token="<pad>", eos_token="<eos>", unk_token="<pad>"
    )
    tok.save_pretrained(os.path.join(d, "tokenizer"))
    hf.config.eos_token_id, hf.config.pad_token_id = v - 1, 0
    hf.generation_config.eos_token_id, hf.generation_config.pad_token_id = v - 1, 0
    hf.save_pretrained(os.path.join(d, "model"))
    return v


def write_data(path: str, vocab: int, num: int = 64, seed: int = 0) -> list[str]:
    """``num`` records of 32 random ids (never 0 or the EOS id) with a 64-token demonstration."""
    rng = np.random.RandomState(seed)
    text = lambda k: " ".join(map(str, rng.randint(1, vocab - 1, k)))
    rows = [{"question": text(PROMPT_LEN), "answer": "0", "demonstration": text(NEW - 1)} for _ in range(num)]
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return [r["question"] for r in rows]


def upt_trainer(experiment: str, model_dir: str, data: str, share_prompt: bool = False):
    """A ``Trainer`` from ``experiments/<experiment>.py`` on the saved model and data file
    (``share_prompt``: ``train.share_prompt``, each group's prompt run once in the update)."""
    import importlib

    from upt_jax.train.trainer import Trainer

    c = importlib.import_module(f"experiments.{experiment}").get_config()
    c.run_dir = tempfile.mkdtemp(prefix=f"upt_rl_step_{experiment}_")
    c.model.init, c.model.hf_dir, c.tokenizer = (
        "hf",
        os.path.join(model_dir, "model"),
        os.path.join(model_dir, "tokenizer"),
    )
    c.data.source, c.data.path, c.data.template = "file", data, "plain"
    c.reward.functions = ("benchmarks.trl_bench:parity_reward",)  # the function TRL's side calls
    c.rollout.n, c.rollout.max_new_tokens, c.rollout.temperature = N, NEW, 1.0
    c.train.questions_per_step, c.train.steps, c.train.learning_rate = PROMPTS, 1000, 1e-5
    c.train.max_grad_norm, c.train.weight_decay = 1.0, 0.0
    if experiment == "grpo":
        c.recipe.hparams.kl_coef = 0.0  # TRL's β = 0: no reference model
    c.checkpoint.every, c.log.progress, c.log.completions = 0, False, False
    c.train.share_prompt = share_prompt
    return Trainer(c)


class TrlSide:
    """``trl_bench.py`` in ``.venv-trl``, one step per ``step()`` call."""

    def __init__(self, model_dir: str, prompts: list[str], steps: int, python: str | None = None):
        python = python or os.path.join(TRL_VENV, "bin", "python")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        self.proc = subprocess.Popen(
            [python, TRL_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self._send(
            json.dumps(
                dict(
                    weights_dir=model_dir,
                    prompts=prompts[: PROMPTS * steps],
                    steps=steps,
                    prompts_per_step=PROMPTS,
                    num_generations=N,
                    new_tokens=NEW,
                )
            )
        )

    def _send(self, line: str):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def step(self) -> float:
        self._send("go")
        for line in self.proc.stdout:
            if line.startswith("TRL_STEP "):
                return json.loads(line[len("TRL_STEP ") :])["seconds"]
        raise RuntimeError(f"TRL side ended (exit {self.proc.wait()})")

    def finish(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith("TRL_RESULT "):
                self.proc.wait()
                return json.loads(line[len("TRL_RESULT ") :])
        return {"status": f"failed (exit {self.proc.wait()})"}


def sampler_n_vs_rows(trainer, repeats: int = 3) -> dict:
    """New tokens/s of the trainer's model: 4 prompts × 8 samples, 32 prompts × 1, and 4 × 8 with
    the prompts padded to 8 as before (a batch bucket of 64 rows), best of ``repeats`` in turn."""
    import jax

    from upt_jax.sampling import Sampler, SamplingParams

    model_state, rng = trainer.state.params, np.random.RandomState(1)
    v = trainer.tok.vocab_size
    prompts = [rng.randint(1, v - 1, PROMPT_LEN).tolist() for _ in range(PROMPTS * N)]
    sampler = trainer.sampler
    before = Sampler(nnx_model(trainer), pad_id=0, batch_bucket=64)
    cases = {
        "4x8": (sampler, prompts[:PROMPTS], N),
        "32x1": (sampler, prompts, 1),
        "4x8_before": (before, prompts[:PROMPTS], N),
    }
    best = {k: float("inf") for k in cases}
    for r in range(repeats + 1):
        for k, (s, ps, n) in cases.items():
            p = SamplingParams(max_new_tokens=NEW, n=n, stop_token_ids=())
            out = s.generate(ps, jax.random.key(r), p, state=model_state)
            if r:
                best[k] = min(best[k], out.run_s)
    return {k: round(PROMPTS * N * NEW / t, 1) for k, t in best.items()}


def update_gflop(trainer) -> float:
    """The FLOPs of the trainer's update step on one step's batch (XLA's cost analysis of its HLO,
    GFLOP): with the matmul peak, the floor under the update's time."""
    import jax

    key = jax.random.key(12345)
    rows, _, _ = trainer.batch(next(trainer.data_iter), key)
    rows.pop("truncated")
    batch = trainer.frozen_inputs(trainer.place(rows), key)
    cost = trainer.step_fn.lower(trainer.state, batch.policy).cost_analysis()  # of the HLO: no compile, no cache
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"]) / 1e9


def nnx_model(trainer):
    from flax import nnx

    return nnx.merge(trainer.graphdef, trainer.state.params)


def child(config: str, rounds: int, trl: bool) -> dict:
    """One config in this process (its ISA and cores already set): GRPO upt_jax vs TRL in turn,
    HPT beside."""
    import torch

    from benchmarks.update_bench import matmul_peak_gflops, torch_matmul_peak_gflops
    from upt_jax.hostinfo import host

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    load0, peak, torch_peak = os.getloadavg()[0], matmul_peak_gflops(), torch_matmul_peak_gflops()
    d = tempfile.mkdtemp(prefix=f"upt_rl_step_{config}_")
    vocab = write_model_dir(config, d)
    data = os.path.join(d, "data.jsonl")
    prompts = write_data(data, vocab)
    sides = {
        "upt_jax": upt_trainer("grpo", d, data),
        "shared": upt_trainer("grpo", d, data, share_prompt=True),
        "hpt": upt_trainer("hpt", d, data),
    }
    trl_side = (
        TrlSide(d, prompts * (rounds + 2), rounds + 2)
        if trl and os.path.exists(os.path.join(TRL_VENV, "bin", "python"))
        else None
    )
    times = {k: [] for k in (*sides, "trl")}
    parts = {k: {"rollout": [], "reward": [], "update": []} for k in sides}  # the trainer's time/* split
    early = 0
    try:
        for r in range(rounds + 2):
            for name, t in sides.items():
                m = t.train_step()
                times[name].append(m["time/step_s"])
                for part, v in parts[name].items():
                    v.append(m[f"time/{part}_s"])
                early += name == "upt_jax" and m["finished_frac"] > 0
            if trl_side is not None:
                times["trl"].append(trl_side.step())
        samp = sampler_n_vs_rows(sides["upt_jax"])
        gflop, gflop_shared = update_gflop(sides["upt_jax"]), update_gflop(sides["shared"])
    finally:
        for t in sides.values():
            t.close()
    res = trl_side.finish() if trl_side is not None else {"status": "not run (make bench-trl-env)"}
    med = {k: round(float(np.median(v[2:])), 3) if len(v) > 2 else None for k, v in times.items()}
    split = {k: {p: round(float(np.median(v[2:])), 3) for p, v in d.items()} for k, d in parts.items()}
    # the ratio if upt_jax's update ran at the matmul peak (its rollout and reward as measured)
    floor = gflop / peak
    rest = split["upt_jax"]["rollout"] + split["upt_jax"]["reward"]
    return dict(
        config=config,
        rounds=rounds,
        step_s=med,
        first_s={k: round(v[0], 2) for k, v in times.items() if v},
        ratio=round(med["trl"] / med["upt_jax"], 2) if med["trl"] else None,
        ratio_shared=round(med["trl"] / med["shared"], 2) if med["trl"] else None,
        trl=res,
        split_s=split,
        update_gflop=round(gflop, 1),
        update_gflop_shared=round(gflop_shared, 1),
        update_floor_s=round(floor, 3),
        ratio_ceiling=round(med["trl"] / (rest + floor), 2) if med["trl"] else None,
        steps_with_early_stop=early,
        sampler_tokens_per_s=samp,
        cores=len(os.sched_getaffinity(0)),
        load_avg=[round(load0, 1), round(os.getloadavg()[0], 1)],
        matmul_peak_gflops=round(peak, 1),
        torch_matmul_peak_gflops=round(torch_peak, 1),
        host=host(),
    )


def run_isa(isa: str, configs, rounds: int, trl: bool, cores: int | None = None) -> list[dict]:
    """``child`` for each config in a fresh process with ``isa``'s environment, on the first
    ``cores`` cores this process may use (all by default; the TRL subprocess inherits them)."""
    env = dict(os.environ)
    for k, v in ISA_ENV[isa].items():
        env[k] = (env.get(k, "") + " " + v).strip() if k == "XLA_FLAGS" else v
    rows = []
    for c in configs:
        args = [sys.executable, "-m", "benchmarks.rl_step_bench", "--child", c, "--rounds", str(rounds)]
        allowed = sorted(os.sched_getaffinity(0))[:cores] if cores else None
        proc = subprocess.run(
            args + ([] if trl else ["--no-trl"]),
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            preexec_fn=(lambda: os.sched_setaffinity(0, allowed)) if allowed else None,
        )
        line = next((x for x in reversed(proc.stdout.splitlines()) if x.startswith(RESULT)), None)
        row = (
            json.loads(line[len(RESULT) :])
            if line
            else {"config": c, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1][-300:]}
        )
        row["isa"] = isa
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _shared_cell(r: dict) -> str:
    s = r["step_s"].get("shared")
    if s is None:
        return "–"
    sp = r.get("split_s", {}).get("shared", {})
    return f"{s} ({sp.get('update', '–')}), {r.get('update_gflop_shared', '–')}"


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| ISA | cores | config | upt_jax GRPO step s (rollout / reward / update) | TRL GRPOTrainer step s "
        "| TRL / upt_jax | upt_jax GRPO, share_prompt: step s (update), update GFLOP | TRL / upt_jax, share_prompt "
        "| upt_jax HPT step s "
        "| first step s (upt_jax / TRL / HPT) | matmul peak GFLOP/s (XLA / PyTorch) | update GFLOP (at peak s) "
        "| TRL / upt_jax, update at peak | load avg (start, end) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['isa']} | {r.get('cores', '')} | {r['config']} | failed: {r['error']} | | | | | | | | | | |"
            )
            continue
        s, f = r["step_s"], r["first_s"]
        trl = s["trl"] if s["trl"] is not None else r["trl"].get("status")
        sp = r.get("split_s", {}).get("upt_jax")
        split = f" ({sp['rollout']} / {sp['reward']} / {sp['update']})" if sp else ""
        lines.append(
            f"| {r['isa']} | {r['cores']} | {r['config']} | {s['upt_jax']}{split} | {trl} | "
            f"{str(r['ratio']) + '×' if r['ratio'] else '–'} | {_shared_cell(r)} | "
            f"{str(r['ratio_shared']) + '×' if r.get('ratio_shared') else '–'} | {s['hpt']} | "
            f"{f.get('upt_jax')} / {f.get('trl', '–')} / {f.get('hpt')} | {r['matmul_peak_gflops']} / {r.get('torch_matmul_peak_gflops', '–')} | "
            f"{r.get('update_gflop', '–')} ({r.get('update_floor_s', '–')}) | "
            f"{str(r['ratio_ceiling']) + '×' if r.get('ratio_ceiling') else '–'} | "
            f"{r['load_avg'][0]}, {r['load_avg'][1]} |"
        )
    lines += [
        "",
        "Sampler new tokens/s inside those runs (2,048 tokens of 64 per row; upt_jax only):",
        "",
        "| ISA | cores | config | 4 prompts × 8 samples | 32 prompts × 1 | 4 × 8 padded to 8 prompts (before) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" not in r:
            t = r["sampler_tokens_per_s"]
            lines.append(
                f"| {r['isa']} | {r['cores']} | {r['config']} | {t['4x8']} | {t['32x1']} | {t['4x8_before']} |"
            )
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", nargs="+", default=["tiny", "small"])
    ap.add_argument("--isa", nargs="+", default=["native", "avx2"], choices=list(ISA_ENV))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--cores",
        type=int,
        nargs="+",
        default=[0],
        help="run each comparison on this many cores (0: all); both sides on the same ones",
    )
    ap.add_argument("--no-trl", action="store_true")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(RESULT + json.dumps(child(a.child, a.rounds, not a.no_trl)), flush=True)
        return None
    t0 = time.time()
    rows = [r for cores in a.cores for isa in a.isa for r in run_isa(isa, a.config, a.rounds, not a.no_trl, cores)]
    from upt_jax.hostinfo import host

    print(f"\nhost: {host()}; {round(time.time() - t0)} s")
    print("\n".join(table(rows)))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
