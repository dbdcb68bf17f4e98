"""The upt_jax side of the Tunix benchmark columns: the subprocess call, its JSON result, and
the "not run" path when ``.venv-tunix`` is missing. Tunix itself is not needed: a fake script
stands in for ``benchmarks/tunix_bench.py``."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from benchmarks import common
from benchmarks.common import TUNIX_NOT_RUN, parse_tunix_output, run_tunix, run_tunix_on, tunix_cells, tunix_fields

FAKE = textwrap.dedent("""
    import json, sys
    req = json.loads(sys.stdin.read())
    print("absl: some log line Tunix prints first")
    print("TUNIX_RESULT " + json.dumps({"tokens_per_s": 1.0, "note": "an earlier result line"}))
    new = req["batch"] * req["new_tokens"]
    print("TUNIX_RESULT " + json.dumps({"tokens_per_s": new / 0.5, "new_tokens": new, "compile_s": 1.25,
                                        "echo": req, "versions": {"google-tunix": "0.1.7"}}))
    print("W1123 trailing warning", file=sys.stderr)
""")


@pytest.fixture
def fake_script(tmp_path):
    p = tmp_path / "fake_tunix_bench.py"
    p.write_text(FAKE)
    return str(p)


def _script(tmp_path, body):
    p = tmp_path / "s.py"
    p.write_text(textwrap.dedent(body))
    return str(p)


def test_missing_venv_is_not_run(tmp_path):
    res = run_tunix({"task": "sampler"}, python=str(tmp_path / "no-venv" / "bin" / "python"))
    assert res == {"status": TUNIX_NOT_RUN}
    row = tunix_fields(res, upt_jax_tps=500.0)
    assert row["tunix_tokens_per_s"] is None and row["tunix_ratio"] is None
    assert tunix_cells(row) == ("not run (make bench-tunix-env)", "–")


def test_default_python_is_the_tunix_venv(monkeypatch, tmp_path):
    monkeypatch.setattr(common, "TUNIX_VENV", str(tmp_path / ".venv-tunix"))
    assert run_tunix({"task": "update"}) == {"status": TUNIX_NOT_RUN}


def test_missing_venv_saves_no_weights(tmp_path):
    class NoSave:
        def save_pretrained(self, d):
            raise AssertionError("weights saved although Tunix cannot run")

    res = run_tunix_on(NoSave(), {"task": "sampler"}, python=str(tmp_path / "missing"))
    assert res == {"status": TUNIX_NOT_RUN}


def test_fake_script_result_is_parsed(fake_script):
    task = {"task": "sampler", "batch": 32, "new_tokens": 64, "prompts": [[1, 2, 3]] * 32}
    res = run_tunix(task, python=sys.executable, script=fake_script)
    assert res["status"] == "ok"
    assert res["tokens_per_s"] == 32 * 64 / 0.5  # the last result line, computed from the task
    assert res["new_tokens"] == 2048 and res["compile_s"] == 1.25
    assert res["echo"] == task  # the task reached the script intact (stdin, JSON)
    row = tunix_fields(res, upt_jax_tps=8192.0)
    assert row["tunix_status"] == "ok" and row["tunix_tokens_per_s"] == 4096.0
    assert row["tunix_ratio"] == 2.0 and row["tunix_compile_s"] == 1.25
    assert row["tunix_versions"] == {"google-tunix": "0.1.7"}
    assert tunix_cells(row) == ("4096.0", "2.0×")


def test_run_tunix_on_passes_a_weights_dir(tmp_path, fake_script):
    seen = {}

    class FakeHF:
        def save_pretrained(self, d):
            seen["dir"] = d
            (tmp_path / "saved").write_text(d)

    res = run_tunix_on(
        FakeHF(), {"task": "sampler", "batch": 2, "new_tokens": 4}, python=sys.executable, script=fake_script
    )
    assert res["status"] == "ok" and res["echo"]["weights_dir"] == seen["dir"]


def test_failing_script_reports_exit_and_last_stderr_line(tmp_path):
    s = _script(
        tmp_path,
        """
        import sys
        print("Traceback ...", file=sys.stderr)
        print("ModuleNotFoundError: No module named 'tunix'", file=sys.stderr)
        sys.exit(3)
    """,
    )
    res = run_tunix({"task": "update"}, python=sys.executable, script=s)
    assert res == {"status": "failed (exit 3): ModuleNotFoundError: No module named 'tunix'"}
    assert tunix_cells(tunix_fields(res, 1.0)) == (res["status"], "–")


def test_script_without_result_line(tmp_path):
    s = _script(tmp_path, 'print("nothing useful")\n')
    assert run_tunix({"task": "sampler"}, python=sys.executable, script=s) == {"status": "failed: no result line"}


def test_hanging_script_times_out(tmp_path):
    s = _script(tmp_path, "import time\ntime.sleep(30)\n")
    res = run_tunix({"task": "sampler"}, python=sys.executable, script=s, timeout=0.5)
    assert res["status"].startswith("failed: timed out")


def test_parse_tunix_output():
    out = 'I1123 log\nTUNIX_RESULT {"tokens_per_s": 3.5}\nTUNIX_RESULT {"tokens_per_s": 7.0}\nlast log\n'
    assert parse_tunix_output(out) == {"tokens_per_s": 7.0, "status": "ok"}
    assert parse_tunix_output("TUNIX_RESULT {not json")["status"].startswith("failed: bad result line")
    assert parse_tunix_output("TUNIX_RESULT [1, 2]") == {"status": "failed: result is not a JSON object"}
    assert parse_tunix_output("") == {"status": "failed: no result line"}


def test_model_dict_is_the_preset_shape():
    from upt_jax.models import preset

    d = common.model_dict(preset("small"))
    assert d["vocab_size"] == 32000 and d["hidden_size"] == 512 and d["num_layers"] == 8
    assert d["num_heads"] == 8 and d["num_kv_heads"] == 2 and d["intermediate_size"] == 2048
    assert d["head_dim"] == 64 and d["tie_word_embeddings"] is False
    json.dumps(d)  # goes to the subprocess as JSON


def test_upt_jax_side_never_imports_tunix():
    code = (
        "import sys; import benchmarks.common, benchmarks.sampler_bench, benchmarks.update_bench, "
        "benchmarks.run_all, benchmarks.tunix_bench; "
        "print(sorted(m for m in sys.modules if m == 'tunix' or m.startswith('tunix.')))"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "[]"


def test_id_tokenizer_round_trip():
    from benchmarks.tunix_bench import _IdTokenizer

    tok = _IdTokenizer(pad_id=0, eos_id=4096)
    assert tok.encode("3 17 4095") == [3, 17, 4095]
    assert tok.decode([3, 17, 4095]) == "3 17 4095"
    assert tok.bos_id() is None and tok.eos_id() == 4096 and tok.pad_id() == 0


@pytest.mark.slow  # 58 s: benchmark plumbing; the parsing tests above stay in make test
def test_run_all_tables_show_tunix_columns(monkeypatch, tmp_path):
    """BENCHMARKS.md's tables: numbers and ratio where Tunix ran, "not run (make bench-tunix-env)"
    where its venv is missing (rows canned, as the benchmarks would return them)."""
    from benchmarks import decode_floor, run_all, sampler_bench, update_bench

    ok = {
        "status": "ok",
        "tokens_per_s": 2000.0,
        "compile_s": 3.5,
        "versions": {"google-tunix": "0.1.7", "jax": "0.10.2", "flax": "0.12.8"},
    }
    missing = run_tunix({"task": "sampler"}, python=str(tmp_path / "none"))

    def samp(config, *a, **kw):
        return dict(
            config=config,
            batch=32,
            new_tokens=64,
            upt_jax_tokens_per_s=6000.0,
            upt_jax_streams=2,
            upt_jax_one_stream_tokens_per_s=5000.0,
            transformers_tokens_per_s=3000.0,
            ratio=2.0,
            **(dict(paired_ratio=2.1, paired_iqr=[2.0, 2.2], rounds=5) if config == "tiny" else {}),
            upt_jax_compile_s=1.0,
            **tunix_fields(ok if config == "tiny" else missing, 6000.0),
        )

    def upd(config, *a, **kw):
        tx = ok if config == "tiny" else missing
        return dict(
            config=config,
            upt_jax_tokens_per_s=1000.0,
            torch_tokens_per_s=500.0,
            ratio=2.0,
            **(dict(paired_ratio=1.9, paired_iqr=[1.8, 2.1], rounds=8) if config == "tiny" else {}),
            upt_jax_mfu=0.3,
            torch_mfu=0.15,
            matmul_peak_gflops=400.0,
            upt_jax_compile_s=2.0,
            upt_jax_temp_mb=10.0,
            **tunix_fields(tx, 1000.0),
            tunix_mfu=0.6 if config == "tiny" else None,
            first_loss=dict(upt_jax=0.372, torch=0.372, tunix=0.372 if config == "tiny" else None),
        )

    monkeypatch.setattr(sampler_bench, "bench", samp)
    monkeypatch.setattr(update_bench, "bench", upd)
    floor_s = {"xla": 0.004, "torch": 0.002, "xla_head": 0.001, "torch_head": 0.0005}
    monkeypatch.setattr(decode_floor, "step_floor", lambda shapes, repeats: floor_s)
    monkeypatch.setattr(
        run_all,
        "hpt_step_split",
        lambda: dict(
            steps=5,
            warm_steps=2,
            compile_steps=3,
            compile_s=9.0,
            rollout_s=1,
            reward_s=0,
            update_s=1,
            step_s=2,
            first_step_s=3,
            rollout_compile_s=1,
        ),
    )
    monkeypatch.setattr(
        run_all,
        "hpt_update_packed_vs_padded",
        lambda: dict(
            rows=72,
            row_len=288,
            packed_rows=36,
            packed_len=256,
            padding_frac=0.6,
            packed_padding_frac=0.2,
            pack_host_s=0.01,
            padded_first_s=9,
            padded_update_s=8,
            packed_first_s=9,
            packed_update_s=4,
            speedup=2.0,
        ),
    )
    monkeypatch.setattr(run_all, "scaling", lambda png, quick: {})
    from benchmarks import first_step, rl_step_bench

    monkeypatch.setattr(
        first_step,
        "bench",
        lambda steps: {
            "steps": steps,
            "runs": {
                "warm": dict(
                    process_s=4.0,
                    first_step_s=3.0,
                    first_compiles=1,
                    first_cache_hits=2,
                    first_compile_s=0.5,
                    later_compiles=0,
                    steps_compiled=[],
                    step_s=0.1,
                )
            },
        },
    )
    monkeypatch.setattr(
        rl_step_bench,
        "run_isa",
        lambda isa, configs, rounds, trl: [
            dict(
                config=c,
                isa=isa,
                cores=2,
                step_s={"upt_jax": 1.0, "hpt": 1.5, "trl": 3.0},
                ratio=3.0,
                first_s={"upt_jax": 9.0, "trl": 2.0, "hpt": 5.0},
                trl={"status": "ok"},
                matmul_peak_gflops=300.0,
                load_avg=[1.0, 1.0],
                sampler_tokens_per_s={"4x8": 3.0, "32x1": 2.0, "4x8_before": 1.0},
            )
            for c in configs
        ],
    )
    monkeypatch.setattr(run_all, "machine", lambda: "test machine")
    monkeypatch.setattr(run_all, "HERE", str(tmp_path))
    out = tmp_path / "BENCHMARKS.md"
    run_all.main(["--out", str(out)])
    text = out.read_text()
    assert "| tiny | 6000.0 | 2 | 5000.0 | 3000.0 | 2.0× | 2.1× (2.0–2.2), 5 | 2000.0 | 3.0× | 1.0 | 3.5 |" in text
    assert (
        "| small | 6000.0 | 2 | 5000.0 | 3000.0 | 2.0× | –, – | not run (make bench-tunix-env) | – | 1.0 | – |" in text
    )
    assert "| tiny | 1000.0 | 500.0 | 2.0× | 1.9× (1.8–2.1), 8 | 2000.0 | 0.5× | 30.0% | 15.0% | 60.0% |" in text
    assert "| small | 1000.0 | 500.0 | 2.0× | –, – | not run (make bench-tunix-env) | – | 30.0% | 15.0% | – |" in text
    assert "Tunix (PyPI `google-tunix` 0.1.7, jax 0.10.2, flax 0.12.8)" in text
    # the sampler's step (32 / 6000 s) and generate's (32 / 3000 s) beside the matmul floors
    assert "| tiny | 32 | 5.333 (2) | 10.667 | 2.0× | 3.556 | 4.0 (1.0) | 2.0 (0.5) | 2.67× | 5.33× |" in text
    assert (
        "First-step loss, tiny (same weights and batch; GRPO's clipped objective on every side): "
        "PyTorch 0.372000, Tunix 0.372000, upt_jax 0.372000."
    ) in text
    assert (
        "First-step loss, small (same weights and batch; GRPO's clipped objective on every side): "
        "PyTorch 0.372000, upt_jax 0.372000." in text
    )  # no Tunix run: PyTorch and upt_jax still compared
    assert "| padded | 72 × 288 | 60.0% | 8 | 9 |" in text and "| packed | 36 × 256 | 20.0% | 4 | 9 |" in text
    assert "| warm | 4.0 | 3.0 | 1 (2) | 0.5 | 0 (steps –) | 0.1 |" in text  # time to the first step
    # the sections of their own runs and the earlier analyses survive a regeneration
    assert "## Memory: full fine-tuning vs LoRA vs QLoRA" in text and "## One-GPU check" in text
    assert "[docs/performance.md](docs/performance.md)" in text
    assert (
        "| native | 2 | tiny | 1.0 | 3.0 | 3.0× | – | – | 1.5 |" in text
        and "| avx2 | 2 | small | 1.0 | 3.0 | 3.0× |" in text
    )
