"""Files are untrusted: checkpoints and weights load without unpickling anything; pickle-based
weights are refused with a clear message (and are never opened, so a malicious one runs nothing).
"""

import pickle
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from upt_jax.models import init_model, load_hf_checkpoint, preset, save_hf_checkpoint
from upt_jax.models.hf_io import CheckpointError as HFCheckpointError
from upt_jax.train import create_train_state, make_optimizer
from upt_jax.train.checkpoint import Checkpointer, abstract_with_shardings, restore_params

CFG = preset(
    "tiny", num_layers=1, vocab_size=64, hidden_size=32, intermediate_size=64, num_heads=4, num_kv_heads=2, head_dim=8
)


class _Touch:
    """Unpickling this creates ``path``: what a malicious ``pytorch_model.bin`` does."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def no_pickle(monkeypatch):
    """Any unpickling (pickle, and torch.load / numpy.load(allow_pickle) which use it) fails."""

    def refuse(*a, **k):
        raise AssertionError("something was unpickled")

    try:  # imported first: importing it (and dill) with pickle patched would fail by itself
        import torch

        monkeypatch.setattr(torch, "load", refuse)
    except ImportError:
        pass
    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    return refuse


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    model = init_model(CFG, 0)
    d = tmp_path_factory.mktemp("hf")
    save_hf_checkpoint(model, d)
    return d, jax.device_get(nnx.state(model))


def test_hf_safetensors_load_never_unpickles(hf_dir, no_pickle):
    d, want = hf_dir
    got = load_hf_checkpoint(d)
    for x, y in zip(_leaves(want), _leaves(nnx.state(got))):
        np.testing.assert_array_equal(x, y)


def test_pickle_weights_alone_are_refused_without_being_opened(hf_dir, tmp_path, no_pickle):
    d, _ = hf_dir
    marker = tmp_path / "PWNED_bin"
    bad = tmp_path / "pt_only"
    bad.mkdir()
    shutil.copy(d / "config.json", bad / "config.json")
    with open(bad / "pytorch_model.bin", "wb") as f:
        f.write(pickle.dumps(_Touch(str(marker))))
    with pytest.raises(HFCheckpointError, match=r"pickle-based weights.*safetensors only"):
        load_hf_checkpoint(bad)
    assert not marker.exists()


def test_pickle_disguised_as_safetensors_is_an_error_not_an_unpickling(hf_dir, tmp_path, no_pickle):
    d, _ = hf_dir
    marker = tmp_path / "PWNED_disguised"
    bad = tmp_path / "disguised"
    bad.mkdir()
    shutil.copy(d / "config.json", bad / "config.json")
    with open(bad / "model.safetensors", "wb") as f:
        f.write(pickle.dumps(_Touch(str(marker))))
    with pytest.raises(Exception) as err:
        load_hf_checkpoint(bad)
    assert not isinstance(err.value, AssertionError), "it was unpickled"
    assert not marker.exists()


def test_checkpoint_restore_and_params_restore_never_unpickle(tmp_path, monkeypatch):
    tx = make_optimizer(1e-3)
    _, state, _ = create_train_state(init_model(CFG, 0), tx, seed=0)
    with Checkpointer(tmp_path, save_every=1, async_save=False) as ck:
        assert ck.save(1, state, {"step": 1})
    # a pickle planted in the checkpoint directory is never read either
    marker = tmp_path / "PWNED_ckpt"
    with open(tmp_path / "1" / "state" / "evil.pkl", "wb") as f:
        f.write(pickle.dumps(_Touch(str(marker))))

    def refuse(*a, **k):
        raise AssertionError("something was unpickled")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    with Checkpointer(tmp_path, read_only=True) as ck:
        restored, extra = ck.restore(abstract_with_shardings(state))
    assert extra == {"step": 1}
    params = restore_params(tmp_path, abstract_with_shardings(state.params))
    for x, y, z in zip(_leaves(state.params), _leaves(restored.params), _leaves(params)):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    assert not marker.exists()
