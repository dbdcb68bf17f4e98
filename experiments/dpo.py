"""DPO (and IPO/SimPO/ORPO/KTO) on offline preference data.

    upt train --config experiments/dpo.py                  # dpo
    upt train --config experiments/dpo.py:simpo            # ipo | simpo | orpo | kto

KTO reads unpaired rows: with ``data.source=file`` a JSONL of ``question`` (map TRL's ``prompt``
with ``--config.data.fields.question=prompt``), ``completion`` and ``label`` (desirable or not);
on the synthetic task step rows alternate the chosen and the rejected answer.

On the synthetic task a pair is (the demonstration, the same demonstration ending in a wrong
answer); with a real dataset set ``data.source=file`` and map ``chosen``/``rejected`` columns.
The reference model is the initial policy (frozen).
"""

from upt_jax.train.config import base_config

VARIANTS = ("dpo", "ipo", "simpo", "orpo", "kto")


def get_config(arg: str | None = None):
    name = arg or "dpo"
    if name not in VARIANTS:
        raise ValueError(f"experiments/dpo.py: unknown variant {name!r}; expected one of {VARIANTS}")
    c = base_config()
    c.name = name
    c.run_dir = f"runs/{name}"
    c.recipe.name = name
    c.mode = "preference"
    c.train.learning_rate = 1e-4
    return c
