"""benchmarks/aot_memory.py on tiny shapes (8 simulated devices, the hpt_paper:tiny config): both
programs lower and compile from abstract shapes, the state is sharded over fsdp, and the table has
a row per program."""

from benchmarks import aot_memory

TINY = dict(
    num_layers=1, hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2, head_dim=16, vocab_size=256
)


def test_aot_memory_compiles_the_update_step_and_the_sampler_on_the_fsdp_mesh():
    r = aot_memory.bench("experiments/hpt_paper.py:tiny", prompt_len=16, **TINY)
    assert r["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1} and r["model"]["num_layers"] == 1
    update, sampler = r["rows"]
    assert [update["program"], sampler["program"]] == ["update", "sampler"]
    # the tiny config: 8 questions × (3 rollouts + 1 demo) rows of 16 prompt + 8 new tokens, 2 micro-batches
    assert (update["rows"], update["seq"], update["microbatch_rows"]) == (32, 24, 16)
    assert (sampler["prompts"], sampler["rows"], sampler["seq"]) == (8, 24, 16 + 16)  # buckets of 16
    for row in r["rows"]:
        assert row["temp_bytes"] > 0 and row["argument_bytes"] > 0 and row["compile_s"] >= 0
        assert row["peak_bytes"] == row["argument_bytes"] + row["output_bytes"] - row["alias_bytes"] + row["temp_bytes"]
    assert update["alias_bytes"] > 0  # the donated state
    # fsdp shards the kernels: a device holds well under the whole, AdamW holds two moments of it
    assert 0 < r["param_bytes_per_device"] < r["param_bytes"] / 2
    for total in ("", "_per_device"):  # two moments of every parameter, and AdamW's step counts
        assert 0 <= r[f"opt_state_bytes{total}"] - 2 * r[f"param_bytes{total}"] < 64
    table = aot_memory.markdown(r)
    assert "| update | 32 × 24 (16 per micro-batch) |" in table and "| sampler | 24 × 32 |" in table
