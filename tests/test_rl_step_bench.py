"""benchmarks/rl_step_bench.py and benchmarks/first_step.py (issue #25): the same prompts reach both
sides as the same ids, both sides score with one reward function, the tables say what failed."""

import json

from benchmarks import first_step, rl_step_bench, trl_bench


def test_word_level_tokenizer_gives_both_sides_the_prompt_ids(tmp_path):
    """The saved tokenizer maps the data's text back to its ids (upt_jax's `plain` template and TRL
    both encode the question text), and its EOS is an id no prompt holds."""
    import transformers

    from upt_jax.data import load_tokenizer
    from upt_jax.data.templates import prompt_ids

    import benchmarks.common as common

    common_presets = dict(common.PRESETS)
    try:  # a small vocabulary: the test saves a tiny model
        common.PRESETS["tiny"] = dict(
            common_presets["tiny"],
            vocab_size=300,
            num_layers=1,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            num_kv_heads=1,
            head_dim=16,
        )
        v = rl_step_bench.write_model_dir("tiny", str(tmp_path))
    finally:
        common.PRESETS.clear()
        common.PRESETS.update(common_presets)
    assert v == 300
    texts = rl_step_bench.write_data(str(tmp_path / "d.jsonl"), v, num=5)
    rows = [json.loads(line) for line in open(tmp_path / "d.jsonl")]
    tok_dir = str(tmp_path / "tokenizer")
    ours, theirs = load_tokenizer(tok_dir), transformers.AutoTokenizer.from_pretrained(tok_dir)
    for t in texts:
        ids = [int(x) for x in t.split()]
        assert len(ids) == rl_step_bench.PROMPT_LEN and 0 not in ids and v - 1 not in ids
        assert prompt_ids(ours, {"question": t}, "plain") == ids
        assert theirs(t, add_special_tokens=True)["input_ids"] == ids
    assert ours.eos_id == v - 1 and ours.pad_id == 0
    assert all(len(r["demonstration"].split()) == rl_step_bench.NEW - 1 for r in rows)
    # the update's FLOPs (the floor under its time at the matmul peak): at least the 6 · params ·
    # tokens of a forward and backward pass, the decoder over every row's 32 + 64 positions and the
    # output head over the 64 response columns only; with share_prompt the decoder runs each group's
    # prompt once
    gflop = {}
    for share in (False, True):
        trainer = rl_step_bench.upt_trainer("grpo", str(tmp_path), str(tmp_path / "d.jsonl"), share_prompt=share)
        try:
            gflop[share] = rl_step_bench.update_gflop(trainer)
        finally:
            trainer.close()
    body, head = 4 * 32 * 32 + 3 * 32 * 64 - 2 * 32 * 16, 300 * 32  # q, k, v, o (1 kv head), MLP; output head
    g, n, p, r = rl_step_bench.PROMPTS, rl_step_bench.N, rl_step_bench.PROMPT_LEN, rl_step_bench.NEW
    full = 6 * g * n * (body * (p + r) + head * r) / 1e9
    shared = 6 * (g * n * (body + head) * r + g * body * p) / 1e9
    assert full <= gflop[False] < 20 * full
    assert shared <= gflop[True] < gflop[False] - 0.5 * (full - shared)  # at least half the saving is real


def test_one_reward_function_on_both_sides():
    assert trl_bench.parity_reward(["p"] * 3, ["ab", "abc", ""]) == [1.0, 0.0, 1.0]
    import inspect

    assert '"benchmarks.trl_bench:parity_reward"' in inspect.getsource(rl_step_bench.upt_trainer)


def test_tables_name_failures_and_missing_sides():
    ok = dict(
        config="tiny",
        isa="native",
        cores=1,
        step_s={"upt_jax": 1.0, "hpt": 2.0, "trl": None},
        first_s={"upt_jax": 9.0, "hpt": 3.0},
        ratio=None,
        trl={"status": "not run (make bench-trl-env)"},
        sampler_tokens_per_s={"4x8": 3.0, "32x1": 2.0, "4x8_before": 1.0},
        matmul_peak_gflops=100.0,
        update_gflop=50.0,
        update_floor_s=0.5,
        ratio_ceiling=None,
        load_avg=[1.0, 2.0],
    )
    lines = rl_step_bench.table([ok, dict(config="small", isa="avx2", error="boom")])
    assert "not run (make bench-trl-env)" in lines[2] and "failed: boom" in lines[3]
    assert lines[2].count("|") == lines[0].count("|") == lines[3].count("|")
    assert any("| 3.0 | 2.0 | 1.0 |" in x for x in lines)
    assert "| 50.0 (0.5) | – |" in lines[2]  # no TRL step: no ceiling
    with_trl = dict(ok, step_s=dict(ok["step_s"], trl=3.0), ratio=3.0, ratio_ceiling=4.0)
    assert "| 3.0× |" in rl_step_bench.table([with_trl])[2] and "| 4.0× |" in rl_step_bench.table([with_trl])[2]
    shared = dict(
        with_trl,
        step_s=dict(with_trl["step_s"], shared=0.75),
        split_s={"shared": {"update": 0.5}},
        update_gflop_shared=40.0,
        ratio_shared=4.0,
    )
    line = rl_step_bench.table([shared])[2]
    assert "| 0.75 (0.5), 40.0 | 4.0× |" in line and line.count("|") == lines[0].count("|")
    res = {
        "steps": 5,
        "runs": {
            "warm": dict(
                process_s=1,
                first_step_s=0.5,
                first_compiles=2,
                first_cache_hits=3,
                first_compile_s=0.1,
                later_compiles=0,
                steps_compiled=[],
                step_s=0.2,
            ),
            "cold": {"error": "x"},
        },
    }
    t = first_step.table(res)
    assert "steps 2–5" in t[0] and "| warm | 1 | 0.5 | 2 (3) |" in t[2] and "failed: x" in t[3]
