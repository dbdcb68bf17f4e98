"""Shared fixtures: the built-in char tokenizer and one tiny random model (1 layer, d=32)."""

import pytest

TINY = dict(num_layers=1, hidden_size=32, intermediate_size=64, num_heads=2, num_kv_heads=1, head_dim=16)


@pytest.fixture(scope="session")
def tok():
    from upt_jax.data import char_tokenizer

    return char_tokenizer()


def tiny_config(tok):
    from upt_jax.models import preset

    return preset(
        "tiny",
        vocab_size=tok.vocab_size,
        eos_token_id=tok.eos_id,
        bos_token_id=tok.bos_id,
        pad_token_id=tok.pad_id,
        **TINY,
    )


@pytest.fixture(scope="session")
def tiny_model(tok):
    from upt_jax.models import init_model

    return init_model(tiny_config(tok), 0)


@pytest.fixture(scope="session")
def sampler(tiny_model, tok):
    """One sampler for the module's tests, so compiled executables are shared."""
    from upt_jax.sampling import Sampler

    return Sampler(tiny_model, pad_id=tok.pad_id)
