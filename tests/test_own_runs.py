"""BENCHMARKS.md's sections measured by their own commands (``benchmarks/own_runs.py``): rendered
from the command's JSON with that run's host and date, and "not run" without it; a regeneration by
``run_all`` keeps them and points to the analyses in docs/performance.md."""

import json

from benchmarks import own_runs


def _row(mode, rank, trainable, param_gib, opt_gib, temp_gib, peak_gib):
    return dict(
        mode=mode,
        rank=rank,
        params=494_032_768 + (0 if mode == "full" else trainable),
        trainable_params=trainable,
        param_gib=param_gib,
        opt_state_gib=opt_gib,
        temp_gib=temp_gib,
        peak_gib=peak_gib,
    )


def test_lora_section_renders_the_commands_result(tmp_path):
    result = dict(
        host="cpu (1 device(s)); host Test CPU, 2 cores",
        date="2026-12-07",
        preset="qwen2-0.5b",
        batch=4,
        seq=512,
        remat="none",
        rows=[
            _row("full", 0, 494_032_768, 1.84, 3.681, 11.679, 17.2),
            _row("lora", 16, 8_798_208, 1.873, 0.066, 12.329, 14.267),
            _row("qlora", 16, 8_798_208, 0.894, 0.066, 13.658, 14.451),
        ],
    )
    path = tmp_path / "lora_memory.json"
    path.write_text(json.dumps(result))
    text = "\n".join(own_runs.lora_lines(str(path)))
    assert "its own run, 2026-12-07; host: cpu (1 device(s)); host Test CPU, 2 cores" in text
    assert "| full fine-tuning | 494,032,768 | 1.84 | 3.681 | 11.679 | 17.2 |" in text
    assert "| LoRA r=16 | 8,798,208 | 1.873 | 0.066 | 12.329 | 14.267 |" in text
    assert "adapters 1.8% of the parameters" in text
    assert "(3.681 GiB → 0.066 GiB)" in text
    assert "the peak falls 17%" in text  # 1 − 14.267 / 17.2
    assert "QLoRA stores the base in 0.894 GiB against LoRA's 1.873" in text


def test_lora_section_says_which_command_makes_it(tmp_path):
    text = "\n".join(own_runs.lora_lines(str(tmp_path / "absent.json")))
    assert "Not run: `python -m benchmarks.lora_memory`" in text


def test_history_points_to_the_performance_notes():
    import os

    assert "[docs/performance.md](docs/performance.md)" in "\n".join(own_runs.HISTORY_LINES)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    notes = open(os.path.join(root, "docs", "performance.md")).read()
    for heading in ("What bounds the whole-step ratio", "The AVX2 rows were not AVX2"):
        assert heading in notes


def test_update_parts_times_both_sides_part_by_part():
    """``benchmarks.update_parts`` on a toy batch: every part timed on both sides, one table row each."""
    from benchmarks import update_parts

    r = update_parts.bench("tiny", 1, 16, 1)
    keys = [k for k, _ in update_parts.ROWS]
    assert sorted(r["upt_jax_ms"]) == sorted(keys) == sorted(r["torch_ms"])
    assert all(r["upt_jax_ms"][k] > 0 and r["torch_ms"][k] > 0 for k in keys)
    lines = update_parts.table(r)
    assert lines[0].startswith("tiny, 1 × 16 tokens; host: ")
    assert len([x for x in lines if x.startswith("| ")]) == 1 + len(keys)


def test_xla_profile_groups_ops_by_kind():
    """``benchmarks.xla_profile``: fusion kinds read from the HLO, ops grouped, shares summing to 1."""
    from benchmarks import xla_profile as xp

    hlo = (
        "  %ynn_fusion.3 = f32[256,1024]{1,0} fusion(%a, %b), kind=kCustom, calls=%f3\n"
        "  %add_divide_fusion = f32[8,256,1024]{2,1,0} fusion(%ynn_fusion.3), kind=kLoop, calls=%f1\n"
        "  ROOT %transpose_copy_fusion = f32[1024,2048]{1,0} fusion(%x), kind=kLoop, calls=%f2\n"
    )
    fus = xp.hlo_fusions(hlo)
    assert fus["ynn_fusion.3"] == ("f32[256,1024]{1,0}", "kCustom")
    assert fus["transpose_copy_fusion"] == ("f32[1024,2048]{1,0}", "kLoop")
    ops = {"ynn_fusion.3": 0.006, "add_divide_fusion": 0.003, "transpose_copy_fusion": 0.001, "reduce.7": 0.0}
    r = xp.summarise(ops, fus, top=2)
    assert r["kinds"]["matmul"] == {"s": 0.006, "share": 0.6}
    assert r["kinds"]["element-wise"]["share"] == 0.3 and r["kinds"]["transpose / copy"]["share"] == 0.1
    assert [t["op"] for t in r["top"]] == ["ynn_fusion.3", "add_divide_fusion"]


def test_xla_profile_traces_a_compiled_program():
    """The trace of a jitted matmul + element-wise program holds its ops, with positive times."""
    import jax
    import jax.numpy as jnp

    from benchmarks import xla_profile as xp

    f = jax.jit(lambda a, b: jnp.tanh(a @ b) * 2.0)
    a = jnp.ones((256, 256))
    ops = xp.profile_ops(lambda: jax.block_until_ready(f(a, a)), calls=2)
    assert ops and all(v >= 0 for v in ops.values()) and sum(ops.values()) > 0
    hlo = f.lower(a, a).compile().as_text()
    kinds = xp.summarise(ops, xp.hlo_fusions(hlo))["kinds"]
    assert kinds["matmul"]["s"] > 0
