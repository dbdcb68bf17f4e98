"""The tiny base model of the synthetic task: plain language modelling on
`upt_jax.data.synthetic.pretraining_corpus` (easy-tier demonstrations and one-column facts).

    upt train --config experiments/pretrain_tiny.py                       # → runs/pretrain_tiny
    upt eval --run-dir runs/pretrain_tiny --tiers easy medium hard

Later experiments start from its final checkpoint (the model's shape is read from the
checkpoint's run directory, so no shape overrides are needed):

    upt train --config experiments/grpo.py --config.model.init=checkpoint \\
        --config.model.checkpoint=runs/pretrain_tiny

or in Python: ``from_base(config, "runs/pretrain_tiny")``. Measured pass rates per tier:
docs/base_model.md.
"""

from upt_jax.data import synthetic
from upt_jax.train.config import base_config

# the base model's shape (on the ``tiny`` preset); `from_base` gives it to later experiments
TINY_MODEL = dict(num_layers=2, hidden_size=128, intermediate_size=512, num_heads=4, num_kv_heads=2, head_dim=32)
# the corpus's tiers, repeated to weight them (easy only: medium/hard stay beyond the base model)
CORPUS_TIERS = synthetic.EASY_TIERS
RUN_DIR = "runs/pretrain_tiny"


def get_config(arg: str | None = None):
    c = base_config()
    c.name = "pretrain_tiny"
    c.run_dir = RUN_DIR
    c.model.overrides = dict(TINY_MODEL)
    c.data.source = "corpus"
    c.data.corpus.n_docs = 50000
    c.data.corpus.tiers = CORPUS_TIERS
    c.data.corpus.demo_fraction = 0.75
    c.data.corpus.facts_per_doc = 12
    c.recipe.name = "sft"  # offline token-mean NLL
    c.mode = "offline"
    # many small steps beat few large ones here (docs/base_model.md): 800 × 16 documents
    c.train.steps = 800
    c.train.questions_per_step = 16  # documents per step (unpacked: data.corpus.pack_len=0)
    c.train.learning_rate = 3e-3  # 1e-2 (with packing) learned far less in the same time
    c.train.schedule = "cosine"
    c.train.warmup_steps = 20
    c.train.weight_decay = 0.01
    c.checkpoint.every = 200
    return c


def from_base(config, run_dir: str = RUN_DIR):
    """``config`` set to start from the base model in ``run_dir`` (its latest checkpoint)."""
    config.model.init = "checkpoint"
    config.model.checkpoint = run_dir
    config.model.overrides = dict(TINY_MODEL)
    return config
