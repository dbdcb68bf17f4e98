"""The golden run of issue #19: six training regimes, 3 steps each on a fixed seed, recorded before
the training loop is refactored, so that the refactor can show it changed nothing.

Regimes (each from its shipped experiment config, shrunk by `_tiny`, in this order):

    sft            experiments/sft.py
    grpo           experiments/grpo.py                    rollout temperature 0.7
    hpt            experiments/hpt.py, gate=soft          rollout temperature 0.7 (γ=0.25, gate τ=0.25)
    dpo            experiments/dpo.py
    reward_model   experiments/reward_model.py            (Bradley–Terry; the reward model PPO uses)
    ppo            experiments/rlhf_ppo.py                rollout temperature 0.7: experiments/ppo.py (critic,
                                                          GAE, 2 update epochs) with the reward model above,
                                                          its KL in the reward and per-batch whitening

Recorded per regime: every scalar metric of every step that ``upt_jax.train.trainer.train``
returns, except wall-clock ones (``time/*``, ``tokens_per_s``) and the compile counts (``compile/*``); and, from the run's final
checkpoint, per parameter leaf its shape, dtype, float64 sum, float64 sum of squares and the
SHA-256 of its raw bytes (the policy's; PPO's critic too; the reward model's). With them, the host
facts (CPU model, ISA flags from /proc/cpuinfo, library versions, ``XLA_FLAGS``).

Fixed, so that the numbers depend on the code only:

* one CPU device and single-threaded Eigen (``GOLDEN_XLA_FLAGS``, set here before jax is
  imported, whatever the caller's ``XLA_FLAGS``: ``make test`` simulates 8 devices, which would
  put the runs on a mesh; other ``JAX_*``/``XLA_*`` variables are dropped); ``config.mesh``
  data=-1, fsdp=1, tensor=1 (no mesh on one device);
* the process pinned to one CPU (`pin_one_cpu`): XLA:CPU's results depend on how many CPUs it
  may use (a 1-CPU and a 2-CPU run differ in the last bits of HPT's parameters);
* ``rollout.streams=1`` (``"auto"`` depends on the host's core count), synchronous checkpoints;
* rewards that an untrained model can earn: the tiny policy never answers correctly, so the
  verifier's rewards are all 0 and GRPO's and HPT's RL terms would train nothing. The verifier is
  run as usual, and a rollout also earns 1 when the CRC-32 of its decoded text is odd
  (`_GoldenVerifier`: deterministic, a function of the sampled tokens, both rewards in most
  groups). PPO's rewards come from the learned reward model.

Regenerate the recorded values (``tests/golden/golden.json``) ONLY when a change is meant to alter
results, and say in the commit why the numbers moved::

    PYTHONPATH=$PWD python -m tests.golden.record          # rewrites tests/golden/golden.json
    PYTHONPATH=$PWD python -m tests.golden.record --check  # runs and compares, writes nothing
    PYTHONPATH=$PWD python -m tests.golden.record --out /tmp/now.json   # runs, writes elsewhere

``tests/golden/test_golden.py`` (in ``make test``) reruns the six regimes in a subprocess and
compares (`compare`): bitwise (metrics and SHA-256s) when the host fingerprint (ISA flags, jax and
jaxlib versions) is the recorded one; otherwise within ``METRIC_RTOL``/``METRIC_ATOL`` and relative
``SUM_RTOL`` on the float64 sums (``LEAF_SUM_RTOL`` for the ill-conditioned key-projection bias),
since XLA:CPU may vectorise differently on another ISA. (That mode
can still fail for a last-bit change: a sampled token is a discontinuous function of the logits,
and one token drawn differently changes a rollout's text, its reward and everything after.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
import time
import zlib

GOLDEN_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden.json")
GOLDEN_XLA_FLAGS = "--xla_force_host_platform_device_count=1 --xla_cpu_multi_thread_eigen=false"
REGIMES = ("sft", "grpo", "hpt", "dpo", "reward_model", "ppo")
RUNS = {  # what each regime runs (written into the record for its readers; `configs` is the truth)
    "sft": "experiments/sft.py",
    "grpo": "experiments/grpo.py; rollout.n=4, rollout.temperature=0.7; verifier + CRC-32 rewards",
    "hpt": "experiments/hpt.py; recipe.hparams gate=soft gamma=0.25 temperature=0.25; rollout.n=4, "
    "rollout.temperature=0.7; verifier + CRC-32 rewards",
    "dpo": "experiments/dpo.py",
    "reward_model": "experiments/reward_model.py; reward_model.eval_pairs=8",
    "ppo": "experiments/rlhf_ppo.py (experiments/ppo.py + the reward_model regime's model, KL in the reward, "
    "batch-whitened rewards); rollout.temperature=0.7",
}
COMMON = (
    "seed=0, model.overrides=TINY, data.tiers=(add_2,), data.n_per_tier=64, train.steps=3, "
    "train.questions_per_step=2, rollout.max_new_tokens=8, rollout.streams=1, mesh=(-1,1,1), one CPU device"
)
STEPS = 3
SEED = 0
ROLLOUT_TEMPERATURE = 0.7

# tolerances when the host is not the recorded one
METRIC_RTOL, METRIC_ATOL, SUM_RTOL = 1e-4, 1e-6, 1e-4
# Leaves whose gradient is a near-cancellation get their own tolerance. The key projection's bias
# adds ``q_t · R_s b`` to every score of query t: softmax ignores its per-query constant part, so
# only RoPE's position-dependent part survives. Its gradient is about 1e-3 of the value bias's
# (a sum of large terms cancelling), which carries about 1e3 times the usual relative rounding
# error; AdamW then takes a full step along it. Another host's kernels move it by 2e-4 relative
# (the reward model on an AMD EPYC against the Intel-recorded run); a wrong gradient moves it by
# O(1). Bitwise comparison on the recorded host is unchanged.
LEAF_SUM_RTOL = {"k_proj/bias": 1e-2}

# the /proc/cpuinfo flags that decide what XLA:CPU and Eigen vectorise with
_ISA_PREFIXES = ("sse", "ssse", "avx", "fma", "f16c", "amx", "bmi", "popcnt")


# ----------------------------------------------------------------------------- host
def cpu_facts() -> dict:
    """CPU model and the ISA flags that matter for XLA:CPU codegen (Linux /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = sorted(x for x in value.split() if x.startswith(_ISA_PREFIXES))
    except OSError:
        pass
    return {"cpu_model": model, "isa_flags": flags}


def host_facts() -> dict:
    import flax
    import jax
    import jaxlib
    import numpy as np
    import optax
    import orbax.checkpoint as ocp

    return dict(
        cpu_facts(),
        machine=platform.machine(),
        python=platform.python_version(),
        jax=jax.__version__,
        jaxlib=jaxlib.__version__,
        flax=flax.__version__,
        optax=optax.__version__,
        orbax_checkpoint=ocp.__version__,
        numpy=np.__version__,
        backend=jax.default_backend(),
        device_count=jax.device_count(),
        XLA_FLAGS=os.environ.get("XLA_FLAGS", ""),
    )


def fingerprint(host: dict) -> dict:
    """What must be equal for the bitwise comparison: the ISA flags, the jax/jaxlib versions (and
    the fixed ``XLA_FLAGS`` and one-CPU pinning, which differ only if the recorder changed or the
    host cannot pin)."""
    return {k: host.get(k) for k in ("isa_flags", "jax", "jaxlib", "XLA_FLAGS", "ran_on_one_cpu")}


def pin_one_cpu() -> int | None:
    """Run this process on one CPU (before jax is imported): XLA:CPU sizes its intra-op thread pool
    by the CPUs the process may use, and its results depend on that size (measured: a 1-CPU and a
    2-CPU run of the same HPT steps differ in the last bit of a parameter, with single-threaded
    Eigen). One CPU of the allowed set, chosen by the process id (two test workers rarely share)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    cpu = cpus[os.getpid() % len(cpus)]
    os.sched_setaffinity(0, {cpu})
    return cpu


# ----------------------------------------------------------------------------- configs
def _tiny(c, run_dir: str):
    """The shipped config ``c``, shrunk: a 1-layer model, 2 questions (pairs) per step of the add_2
    tier, 8 new tokens per rollout, one device, 3 steps, a checkpoint at the end only."""
    from tests.train.test_trainer import shrink

    n = c.rollout.n  # shrink's 2 rollouts are not the golden run's: the online regimes set 4 below
    shrink(c, run_dir, STEPS)
    c.seed, c.rollout.n = SEED, n
    c.rollout.streams = "1"  # a string key ("auto" or a count), as on the command line
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
    c.checkpoint.every = STEPS
    c.checkpoint.async_save = False
    return c


def configs(root: str) -> dict:
    """The six regimes' configs, run directories under ``root`` (``ppo`` reads ``reward_model``'s)."""
    import ml_collections

    from experiments import dpo, grpo, hpt, reward_model, rlhf_ppo, sft

    d = lambda name: os.path.join(root, name)
    out = {"sft": _tiny(sft.get_config(), d("sft"))}
    c = _tiny(grpo.get_config(), d("grpo"))
    c.rollout.n, c.rollout.temperature = 4, ROLLOUT_TEMPERATURE
    out["grpo"] = c
    c = _tiny(hpt.get_config(), d("hpt"))
    c.recipe.hparams = ml_collections.ConfigDict(
        dict(c.recipe.hparams.to_dict(), gate="soft", gamma=0.25, temperature=0.25), type_safe=False
    )
    c.rollout.n, c.rollout.temperature = 4, ROLLOUT_TEMPERATURE
    out["hpt"] = c
    out["dpo"] = _tiny(dpo.get_config(), d("dpo"))
    c = _tiny(reward_model.get_config(), d("reward_model"))
    c.reward_model.eval_pairs = 8  # held-out accuracy at the last step, on 8 pairs
    out["reward_model"] = c
    c = _tiny(rlhf_ppo.get_config(), d("ppo"))
    c.reward.model_run_dir = d("reward_model")
    c.rollout.n, c.rollout.temperature = 4, ROLLOUT_TEMPERATURE
    out["ppo"] = c
    return out


def _golden_verifier_class():
    from upt_jax.rewards import Verifier

    class _GoldenVerifier(Verifier):
        """The configured verifier, plus reward 1 for a rollout whose decoded text has an odd CRC-32
        (an untrained model earns no verifier reward; see the module docstring)."""

        def scores(self, outputs, golds):
            import numpy as np

            real = super().scores(outputs, golds)
            coin = np.asarray([zlib.crc32(o.encode("utf-8")) & 1 for o in outputs], np.float32)
            return np.maximum(real, coin)

    return _GoldenVerifier


class _verifier_patched:
    """``upt_jax.rewards.Verifier`` is `_GoldenVerifier` inside the block (the trainer builds its
    verifier from that name)."""

    def __enter__(self):
        import upt_jax.rewards

        self._saved = upt_jax.rewards.Verifier
        upt_jax.rewards.Verifier = _golden_verifier_class()

    def __exit__(self, *exc):
        import upt_jax.rewards

        upt_jax.rewards.Verifier = self._saved


# ----------------------------------------------------------------------------- values
def _excluded(key: str) -> bool:
    # wall-clock, and the compile counts (they depend on what the persistent compilation cache holds)
    return key.startswith(("time/", "compile/")) or key == "tokens_per_s" or key.endswith("_per_s")


def scalar_metrics(history: list[dict]) -> list[dict]:
    out = []
    for m in history:
        out.append(
            {
                k: (float(v) if not isinstance(v, int) or isinstance(v, bool) else v)
                for k, v in sorted(m.items())
                if not _excluded(k) and isinstance(v, (int, float))
            }
        )
    return out


def _sha256(x) -> str:
    import numpy as np

    a = np.ascontiguousarray(np.asarray(x))
    return hashlib.sha256(a.tobytes()).hexdigest()


def param_checksums(params) -> dict:
    """``{leaf path: {shape, dtype, sum, sumsq, sha256}}``; sums in float64."""
    import jax
    import numpy as np

    out = {}
    for path, x in jax.tree_util.tree_leaves_with_path(params):
        a = np.asarray(x)
        f = a.astype(np.float64)
        name = "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)
        out[name] = {
            "shape": list(a.shape),
            "dtype": str(a.dtype),
            "sum": float(f.sum()),
            "sumsq": float(np.square(f).sum()),
            "sha256": _sha256(a),
        }
    return out


def checkpoint_params(checkpoints_dir: str) -> dict:
    """The ``params`` of the newest step saved in ``checkpoints_dir``, read as stored (numpy)."""
    import warnings

    import orbax.checkpoint as ocp

    steps = sorted(int(p) for p in os.listdir(checkpoints_dir) if p.isdigit())
    if not steps:
        raise FileNotFoundError(f"no saved step in {checkpoints_dir}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Sharding info not provided when restoring": one CPU device
        tree = ocp.PyTreeCheckpointer().restore(os.path.abspath(os.path.join(checkpoints_dir, str(steps[-1]), "state")))
    return {"step": steps[-1], "params": tree["params"]}


def run_regime(name: str, config) -> dict:
    from upt_jax.train.trainer import train

    t0 = time.perf_counter()
    if name in ("grpo", "hpt"):
        with _verifier_patched():
            history = train(config)
    else:
        history = train(config)
    seconds = time.perf_counter() - t0
    if [m["step"] for m in history] != list(range(1, STEPS + 1)):
        raise RuntimeError(f"{name}: steps {[m['step'] for m in history]}, expected 1..{STEPS}")
    out = {"metrics": scalar_metrics(history)}
    saved = checkpoint_params(os.path.join(config.run_dir, "checkpoints"))
    out["params_step"], out["params"] = saved["step"], param_checksums(saved["params"])
    critic_dir = os.path.join(config.run_dir, "checkpoints_critic")
    if os.path.isdir(critic_dir):
        saved = checkpoint_params(critic_dir)
        out["critic_params_step"], out["critic_params"] = saved["step"], param_checksums(saved["params"])
    out["_seconds"] = seconds
    return out


def run_all(regimes=REGIMES) -> dict:
    """Run the regimes (``ppo`` after ``reward_model``, whose run it reads) in temporary directories."""
    if "ppo" in regimes and "reward_model" not in regimes:
        raise ValueError("ppo reads the reward_model regime's run: run both")
    with tempfile.TemporaryDirectory(prefix="upt_golden_") as root:
        cfgs = configs(root)
        results, seconds = {}, {}
        for name in REGIMES:
            if name in regimes:
                results[name] = run_regime(name, cfgs[name])
                seconds[name] = round(results[name].pop("_seconds"), 2)
    return {"host": host_facts(), "seconds": seconds, "regimes": results}


# ----------------------------------------------------------------------------- comparison
def _same_float(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _close(a, b, rtol, atol) -> bool:
    if _same_float(a, b):
        return True
    if not (isinstance(a, (int, float)) and isinstance(b, (int, float))) or not (math.isfinite(a) and math.isfinite(b)):
        return False
    return abs(a - b) <= atol + rtol * abs(b)


SAMPLING_REGIMES = ("grpo", "hpt", "ppo")  # their later steps depend on sampled tokens


def _leaf_rtol(leaf: str) -> float:
    """The relative tolerance of a parameter leaf's sums off the recorded host (`LEAF_SUM_RTOL`)."""
    return max([SUM_RTOL] + [t for key, t in LEAF_SUM_RTOL.items() if f"/{key}/" in f"/{leaf}/"])


def compare(recorded: dict, now: dict) -> tuple[str, list[str], list[str]]:
    """``(mode, problems, notes)``: ``mode`` is ``"bitwise"`` when the host fingerprints agree (then
    every recorded metric and every SHA-256 must be equal), else ``"tolerance"`` (metrics within
    ``METRIC_RTOL``/``METRIC_ATOL``, float64 sums within ``SUM_RTOL``; the regimes that sample,
    `SAMPLING_REGIMES`, are then not compared). Metrics the run logs and the record lacks are notes,
    not problems."""
    bitwise = fingerprint(recorded["host"]) == fingerprint(now["host"])
    mode = "bitwise" if bitwise else "tolerance"
    problems, notes = [], []
    for name, rec in recorded["regimes"].items():
        got = now["regimes"].get(name)
        if got is None:
            problems.append(f"{name}: not run")
            continue
        if not bitwise and name in SAMPLING_REGIMES:
            # off the recorded host a last-bit difference can flip one sampled token, and with it a
            # rollout's text, reward and every later step: no tolerance separates that from a bug
            notes.append(f"{name}: samples rollouts, compared on the recorded host fingerprint only")
            continue
        if len(rec["metrics"]) != len(got["metrics"]):
            problems.append(f"{name}: {len(got['metrics'])} steps, recorded {len(rec['metrics'])}")
        for i, (rm, gm) in enumerate(zip(rec["metrics"], got["metrics"])):
            for k, v in rm.items():
                if k not in gm:
                    problems.append(f"{name} step {i + 1}: metric {k!r} missing")
                elif not (_same_float(gm[k], v) if bitwise else _close(gm[k], v, METRIC_RTOL, METRIC_ATOL)):
                    problems.append(f"{name} step {i + 1}: {k} = {gm[k]!r}, recorded {v!r}")
            extra = sorted(set(gm) - set(rm))
            if extra:
                notes.append(f"{name} step {i + 1}: metrics not in the record: {extra}")
        for key in ("params", "critic_params"):
            if key not in rec:
                continue
            if key not in got:
                problems.append(f"{name}: no {key}")
                continue
            if set(rec[key]) != set(got[key]):
                problems.append(f"{name} {key}: leaves {sorted(set(got[key]) ^ set(rec[key]))} differ")
            for leaf, r in rec[key].items():
                g = got[key].get(leaf)
                if g is None:
                    continue
                if (g["shape"], g["dtype"]) != (r["shape"], r["dtype"]):
                    problems.append(f"{name} {key} {leaf}: {g['dtype']}{g['shape']}, recorded {r['dtype']}{r['shape']}")
                elif bitwise:
                    if g["sha256"] != r["sha256"]:
                        problems.append(
                            f"{name} {key} {leaf}: sha256 differs (sum {g['sum']!r}, recorded {r['sum']!r})"
                        )
                else:
                    # a sum that cancels to near 0 is compared at the leaf's scale, √(n·Σx²) ≥ |Σx|
                    scale = math.sqrt(math.prod(r["shape"]) * r["sumsq"])
                    rtol = _leaf_rtol(leaf)
                    for s, atol in (("sum", rtol * scale), ("sumsq", 0.0)):
                        if not _close(g[s], r[s], rtol, atol):
                            problems.append(f"{name} {key} {leaf}: {s} {g[s]!r}, recorded {r[s]!r}")
    return mode, problems, notes


# ----------------------------------------------------------------------------- CLI
def _write(result: dict, path: str) -> None:
    doc = {
        "about": (
            "The golden run of issue #19 (tests/golden/record.py). Regenerate only when a change is "
            "meant to alter results: PYTHONPATH=$PWD python -m tests.golden.record; say why in the "
            "commit."
        ),
        "steps": STEPS,
        "seed": SEED,
        "common": COMMON,
        "runs": RUNS,
        **result,
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=False)
        f.write("\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.golden.record", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help=f"where to write the values (default: {GOLDEN_JSON})")
    p.add_argument("--check", action="store_true", help="compare with the recorded values; write nothing")
    p.add_argument("--regimes", default=",".join(REGIMES), help="a comma-separated subset (debugging)")
    args = p.parse_args(argv)
    if "jax" in sys.modules:
        raise RuntimeError("tests.golden.record must set XLA_FLAGS before jax is imported: run it as a module")
    dropped = sorted(k for k in os.environ if k.startswith(("JAX_", "XLA_")) and k != "JAX_PLATFORMS")
    for k in dropped:  # e.g. JAX_ENABLE_X64, JAX_DEFAULT_MATMUL_PRECISION would change the numbers
        del os.environ[k]
    os.environ["XLA_FLAGS"] = GOLDEN_XLA_FLAGS
    os.environ["JAX_PLATFORMS"] = "cpu"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    pinned = pin_one_cpu()
    if [k for k in dropped if k != "XLA_FLAGS"]:
        print(f"ignoring {dropped} (the golden run sets its own)", flush=True)
    import logging

    logging.basicConfig(level=logging.WARNING)
    regimes = tuple(r for r in args.regimes.split(",") if r)
    result = run_all(regimes)
    result["host"].update(cpus_allowed=cpus, ran_on_one_cpu=pinned is not None)
    print(f"ran {', '.join(regimes)} in {sum(result['seconds'].values()):.1f} s: {result['seconds']}", flush=True)
    if args.check:
        with open(GOLDEN_JSON) as f:
            recorded = json.load(f)
        mode, problems, notes = compare(recorded, result)
        print(f"compared {mode}: {len(problems)} problems", *problems, *notes, sep="\n")
        return 1 if problems else 0
    out = args.out or GOLDEN_JSON
    if regimes != REGIMES and out == GOLDEN_JSON:
        raise SystemExit("a subset of the regimes is never written to the golden file; pass --out")
    _write(result, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
