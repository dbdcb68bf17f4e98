"""Pre-training the base model: the corpus data source (plain language modelling) lowers the
NLL, `experiments/pretrain_tiny.py` is a valid config, and a later stage started from its
checkpoint adopts the checkpoint's model shape."""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from experiments import grpo, pretrain_tiny
from upt_jax.data import load_tokenizer, synthetic
from upt_jax.train import trainer as trainer_lib
from upt_jax.train.rows import text_rows

SMALL = dict(num_layers=1, hidden_size=32, intermediate_size=64, num_heads=2, num_kv_heads=1, head_dim=16)


def _corpus_config(run_dir, steps=6):
    c = pretrain_tiny.get_config()
    c.run_dir = str(run_dir)
    c.model.overrides = dict(SMALL)
    c.data.corpus.n_docs = 64
    c.train.steps = steps
    c.train.questions_per_step = 8
    c.train.learning_rate = 1e-2
    c.train.warmup_steps = 0
    c.train.schedule = "constant"
    c.checkpoint.async_save = False
    c.log.progress = False
    return c


def test_pretrain_tiny_config_is_valid(tmp_path):
    c = pretrain_tiny.get_config()
    assert (c.data.source, c.mode, c.recipe.name) == ("corpus", "offline", "sft")
    assert c.model.overrides.to_dict() == pretrain_tiny.TINY_MODEL
    assert set(c.data.corpus.tiers) <= set(synthetic.TIERS)
    c.run_dir = str(tmp_path / "run")
    c.data.corpus.n_docs = 64
    records = trainer_lib.load_records(c)
    assert len(records) == 64 and all(r["text"] for r in records)
    trainer_lib.validate(c, records)  # mesh, batch and run directory fit
    trainer_lib.get_recipe(c)
    # the default run is sized for a 2-core CPU
    assert c.train.steps * c.train.questions_per_step <= 20000
    # corpus documents are rendered with the evaluation prompt template
    demo = next(r["text"] for r in records if r["text"].startswith("Question:"))
    assert "\\boxed{" in demo
    # a corpus source outside offline mode is refused
    c.mode = "online"
    with pytest.raises(ValueError, match="mode=offline"):
        trainer_lib.validate(c, records)
    # from_base points a later experiment at the base model
    g = pretrain_tiny.from_base(grpo.get_config(), "runs/x")
    assert (g.model.init, g.model.checkpoint) == ("checkpoint", "runs/x")
    assert g.model.overrides.to_dict() == pretrain_tiny.TINY_MODEL


def test_text_rows_train_every_token_but_the_first(tmp_path):
    tok = load_tokenizer("char")
    rows, info = text_rows(tok, [{"text": "1+2+0=3"}, {"text": "7*6+4=46\n1+1+0=2"}])
    assert rows["tokens"].shape[1] == 1 + 16  # a one-column prompt, the rest in a length bucket
    for i, text in enumerate(["1+2+0=3", "7*6+4=46\n1+1+0=2"]):
        ids = tok.encode(text) + [tok.eos_id]
        n = len(ids)
        assert rows["tokens"][i, :n].tolist() == ids
        assert rows["mask"][i].tolist() == [0.0] + [1.0] * (n - 1) + [0.0] * (17 - n)
        assert rows["attention_mask"][i, :n].all() and not rows["attention_mask"][i, n:].any()
    assert info["response_length"] == pytest.approx((7 + 16) / 2)


def test_corpus_pretraining_lowers_nll_and_later_stages_adopt_its_shape(tmp_path):
    run = tmp_path / "pretrain"
    history = trainer_lib.train(_corpus_config(run))
    nll = [m["nll"] for m in history]
    assert len(nll) == 6 and all(np.isfinite(nll))
    assert np.mean(nll[-2:]) < nll[0] - 0.3, nll
    saved = json.load(open(run / "config.json"))
    assert saved["data"]["source"] == "corpus"
    # a later stage with another shape in its config starts from this checkpoint with its shape
    g = grpo.get_config()
    g.model.init, g.model.checkpoint = "checkpoint", str(run)
    assert g.model.overrides.to_dict() != SMALL
    model = trainer_lib.build_model(g.model, vocab_size=load_tokenizer("char").vocab_size)
    assert g.model.overrides.to_dict() == SMALL
    from upt_jax.train.run_model import load_run_model

    base, _, _, _ = load_run_model(run)
    same = jax.tree.map(
        lambda a, b: bool(np.array_equal(a, b)), nnx.state(model, nnx.Param), nnx.state(base, nnx.Param)
    )
    assert all(jax.tree.leaves(same))


def test_packed_corpus_rows(tmp_path):
    c = pretrain_tiny.get_config()
    c.data.corpus.n_docs = 200
    c.data.corpus.pack_len = 512
    plain = [r["text"] for r in trainer_lib.corpus_records(_unpacked(c))]
    packed = trainer_lib.corpus_records(c)
    assert [d for r in packed for d in r["text"]] == plain  # the same documents, in order
    assert all(sum(len(d) + 1 for d in r["text"]) <= 512 for r in packed)
    assert len(packed) < len(plain) / 2
    tok = load_tokenizer("char")
    rows, _ = text_rows(tok, packed[:2])
    assert rows["tokens"].shape[1] == 1 + 512
    ids = [i for d in packed[0]["text"] for i in tok.encode(d) + [tok.eos_id]]
    assert rows["tokens"][0, : len(ids)].tolist() == ids
    assert rows["mask"][0].sum() == len(ids) - 1


def _unpacked(c):
    u = c.copy_and_resolve_references()
    u.data.corpus.pack_len = 0
    return u
