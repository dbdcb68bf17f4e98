"""``upt export`` of LoRA runs: the adapters in the PEFT layout, which ``peft`` loads onto the
transformers model of the base with upt_jax's logits within 1e-4, and ``--merge-lora``'s full
directory, which transformers loads with the same logits."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import sft
from tests.models.hf_fixtures import hf_logits, left_padded_batch
from tests.train.test_hf_handoff import make_hf_dir, sft_config
from tests.train.test_trainer import shrink
from upt_jax.train.lora_state import adapted_model_from_run
from upt_jax.train.trainer import Trainer


def _train(c):
    c.model.lora.update(dict(rank=4, alpha=8.0))
    c.train.learning_rate = 2e-2
    t = Trainer(c)
    try:
        t.run()
    finally:
        t.close()
    return c.run_dir


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    hf = make_hf_dir(tmp_path_factory.mktemp("hf") / "tiny-qwen2")
    return _train(sft_config(tmp_path_factory.mktemp("runs") / "lora", hf, steps=2)), hf


def _ours_and_batch(run_dir):
    model, step, _ = adapted_model_from_run(run_dir, key="test")
    tokens, mask = left_padded_batch(model.cfg.vocab_size)
    logits = np.asarray(model(jnp.asarray(tokens), attention_mask=jnp.asarray(mask))[0])
    return logits, tokens, mask, step


def _peft_logits(out, tokens, mask):
    import peft
    import transformers

    base_dir = json.load(open(os.path.join(out, "adapter_config.json")))["base_model_name_or_path"]
    base = transformers.AutoModelForCausalLM.from_pretrained(base_dir).float().eval()
    plain = hf_logits(base, tokens, mask)  # before peft wraps the base's layers in place
    return hf_logits(peft.PeftModel.from_pretrained(base, str(out)).eval(), tokens, mask), plain


def test_peft_layout_export_loads_with_peft_and_matches(lora_run, tmp_path):
    from upt_jax import cli

    run, hf = lora_run
    out = tmp_path / "adapters"
    assert cli.main(["export", run, str(out)]) == 0
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= set(os.listdir(out))
    config = json.load(open(out / "adapter_config.json"))
    assert config["base_model_name_or_path"] == os.path.abspath(hf) and config["r"] == 4
    from safetensors.numpy import load_file

    tensors = load_file(str(out / "adapter_model.safetensors"))
    a = tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    b = tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    assert a.shape == (4, 32) and b.shape == (32, 4) and np.abs(b).max() > 0
    assert len(tensors) == 2 * 7 * 2  # A and B of 7 projections in 2 layers
    ours, tokens, mask, step = _ours_and_batch(run)
    assert step == 2
    theirs, base = _peft_logits(out, tokens, mask)
    real = mask.astype(bool)
    assert np.abs(ours[real] - base[real]).max() > 1e-3  # the adapters changed the model ...
    np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=0)  # ... and peft agrees


def test_merged_export_loads_in_transformers_and_matches(lora_run, tmp_path):
    import transformers

    from upt_jax import cli

    run, _ = lora_run
    out = tmp_path / "merged"
    assert cli.main(["export", run, str(out), "--merge-lora"]) == 0
    assert "model.safetensors" in os.listdir(out) and "adapter_config.json" not in os.listdir(out)
    ours, tokens, mask, _ = _ours_and_batch(run)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(str(out)).float().eval()
    real = mask.astype(bool)
    np.testing.assert_allclose(ours[real], hf_logits(hf_model, tokens, mask)[real], atol=1e-4, rtol=0)


def test_qlora_preset_run_exports_its_dequantised_base_beside_the_adapters(tmp_path):
    c = shrink(sft.get_config(), tmp_path / "qlora", steps=1)
    c.model.lora.quantize, c.model.lora.block_size = "nf4", 16
    run = _train(c)
    out = tmp_path / "adapters"
    from upt_jax.train.export import export_run

    export_run(run, out)
    config = json.load(open(out / "adapter_config.json"))
    assert config["base_model_name_or_path"] == os.path.abspath(out / "base")  # a preset: no HF source
    ours, tokens, mask, _ = _ours_and_batch(run)
    theirs, _ = _peft_logits(out, tokens, mask)
    real = mask.astype(bool)
    np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=0)


def test_merge_lora_on_a_full_fine_tuning_run_is_an_error(tmp_path):
    from upt_jax.train.export import export_run

    (tmp_path / "model.json").write_text(json.dumps({"format": 1, "model": {}, "source": {"init": "preset"}}))
    with pytest.raises(ValueError, match="trained no LoRA adapters"):
        export_run(tmp_path, tmp_path / "out", merge_lora=True)


def test_a_lora_run_on_a_parent_run_reads_back_with_the_parent_as_its_base(tmp_path):
    """A LoRA run started from another run (``model.init=checkpoint``) records only its adapters:
    reading it back rebuilds its base from the parent run (`run_model.model_from_run`, the one way to
    get a run's model, recursing into the parent) and `model_from_run` gives it with the adapters
    merged: the adapted model's logits, and with the adapters off exactly the parent's."""
    from upt_jax.models.lora import set_adapters
    from upt_jax.train.run_model import model_from_run

    parent = shrink(sft.get_config(), tmp_path / "parent", steps=1)
    t = Trainer(parent)
    try:
        t.run()
    finally:
        t.close()
    child = shrink(sft.get_config(), tmp_path / "child", steps=1)
    child.model.init, child.model.checkpoint = "checkpoint", parent.run_dir
    _train(child)

    ours, tokens, mask, step = _ours_and_batch(child.run_dir)
    merged, merged_step = model_from_run(child.run_dir, key="test")
    assert step == merged_step == 1
    real = mask.astype(bool)

    def logits(model):
        return np.asarray(model(jnp.asarray(tokens), attention_mask=jnp.asarray(mask))[0])[real]

    np.testing.assert_allclose(logits(merged), ours[real], atol=1e-5, rtol=0)
    base = logits(set_adapters(adapted_model_from_run(child.run_dir, key="test")[0], False))
    np.testing.assert_array_equal(base, logits(model_from_run(parent.run_dir, key="test")[0]))
    assert np.abs(ours[real] - base).max() > 1e-4  # the adapters trained: the merge is tested
