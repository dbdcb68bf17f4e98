"""Parity with transformers (PyTorch CPU): logits on a left-padded batch, import and export."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from upt_jax.models import load_hf_checkpoint, save_hf_checkpoint
from tests.models.hf_fixtures import FAMILIES, build_hf_model, hf_logits, left_padded_batch

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4


def _max_err_on_valid(a, b, mask):
    return float(np.abs(a - b)[mask.astype(bool)].max())


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def hf_dir(request, tmp_path_factory):
    family = request.param
    model = build_hf_model(family)
    d = tmp_path_factory.mktemp(family)
    model.save_pretrained(d)  # safetensors by default
    return family, model, str(d)


def test_logits_match_transformers_left_padded(hf_dir):
    family, hf_model, d = hf_dir
    model = load_hf_checkpoint(d)
    tokens, mask = left_padded_batch(hf_model.config.vocab_size)
    ours, _ = model(jnp.asarray(tokens), attention_mask=jnp.asarray(mask))
    theirs = hf_logits(hf_model, tokens, mask)
    err = _max_err_on_valid(np.asarray(ours), theirs, mask)
    assert err < TOL, f"{family}: max |Δlogits| = {err}"
    # The padded rows equal the same sequences unpadded.
    for i in range(tokens.shape[0]):
        n = int(mask[i].sum())
        solo, _ = model(jnp.asarray(tokens[i : i + 1, -n:]))
        np.testing.assert_allclose(np.asarray(solo)[0], np.asarray(ours)[i, -n:], atol=1e-5)


def test_config_families_are_detected(hf_dir):
    family, hf_model, d = hf_dir
    cfg = load_hf_checkpoint(d).cfg
    assert cfg.qk_norm == (family == "qwen3")
    assert cfg.qkv_bias == family.startswith("qwen2")
    assert cfg.tie_word_embeddings == hf_model.config.tie_word_embeddings
    if family == "llama3":
        assert cfg.rope_scaling_dict["rope_type"] == "llama3"


def test_export_reloads_in_transformers(hf_dir, tmp_path):
    family, hf_model, d = hf_dir
    model = load_hf_checkpoint(d)
    out = save_hf_checkpoint(model, tmp_path / "export", max_shard_bytes=40_000)
    files = os.listdir(out)
    assert "model.safetensors.index.json" in files, files  # small shards force the index path
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).float().eval()
    tokens, mask = left_padded_batch(hf_model.config.vocab_size, seed=1)
    err = _max_err_on_valid(hf_logits(reloaded, tokens, mask), hf_logits(hf_model, tokens, mask), mask)
    assert err < TOL, f"{family}: export → transformers max |Δlogits| = {err}"
    # and the sharded export loads back into upt_jax bit-exactly
    again = load_hf_checkpoint(out)
    a, _ = model(jnp.asarray(tokens), attention_mask=jnp.asarray(mask))
    b, _ = again(jnp.asarray(tokens), attention_mask=jnp.asarray(mask))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["model_type"] == hf_model.config.model_type
