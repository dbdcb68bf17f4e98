"""benchmarks/lora_memory.py on a tiny config (abstract shapes, compiled memory analysis): LoRA keeps
optimiser state for the adapters alone and a smaller update step than full fine-tuning, and QLoRA's
nf4 base stores fewer bytes than LoRA's float32 base with the same adapters."""

from benchmarks import lora_memory


def test_lora_memory_rows_order_full_lora_qlora():
    r = lora_memory.bench("tiny", rank=4, batch=2, seq=32, num_layers=1, vocab_size=256)
    full, lora, qlora = r["rows"]
    assert r["host"] and [x["mode"] for x in r["rows"]] == ["full", "lora", "qlora"]
    assert full["trainable_params"] == full["params"] > 40 * lora["trainable_params"] > 0
    # r · (D_in + D_out) of q, k, v, o (hidden 256, 4 × 64 queries, 2 × 64 keys/values), gate, up, down (1024)
    assert lora["trainable_params"] == qlora["trainable_params"] == 4 * (512 + 384 + 384 + 512 + 3 * 1280)
    assert lora["opt_state_bytes"] < full["opt_state_bytes"] / 40  # AdamW moments of the adapters only
    assert qlora["param_bytes"] < lora["param_bytes"]  # nf4 (qwix) base
    assert lora["peak_bytes"] < full["peak_bytes"]
    assert "QLoRA r=4 (nf4)" in lora_memory.markdown(r)
