"""Iteration over records: a deterministic, shardable, resumable grain pipeline (`make_dataset`):
shard, shuffle (a fresh permutation each epoch, from the seed), repeat, batch; its iterator's
state is a small JSON-serialisable dict that resumes it exactly."""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["make_dataset"]


def make_dataset(
    records: Sequence[Any],
    *,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = 1,
    shard_index: int = 0,
    shard_count: int = 1,
    even_shards: bool = True,
    batch_size: int | None = None,
    drop_remainder: bool = False,
):
    """A deterministic, shardable, resumable grain pipeline over ``records``.

    Order: shard (``records[shard_index::shard_count]``, after truncating to a multiple
    of ``shard_count`` when ``even_shards`` so every host sees as many rows) → shuffle
    (a new permutation each epoch, a function of ``seed`` only) → repeat ``num_epochs``
    times (``None``: forever) → batch into lists of records.

    Args:
      records: any random-access sequence (a list of records, a synthetic source).

    Returns:
      A ``grain.IterDataset``. ``it = iter(ds)``; ``it.get_state()`` is a JSON-
      serialisable dict; a fresh ``iter(ds)`` after ``set_state(state)`` yields exactly
      what ``it`` would have yielded next.
    """
    import grain

    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
    ds = grain.MapDataset.source(records)
    if shard_count > 1:
        n = len(ds) - len(ds) % shard_count if even_shards else len(ds)
        ds = ds[:n][shard_index::shard_count]
    if shuffle:
        ds = ds.shuffle(seed=seed)
    if num_epochs != 1:
        ds = ds.repeat(num_epochs)
    it_ds = ds.to_iter_dataset()
    if batch_size is not None:
        it_ds = it_ds.batch(batch_size, drop_remainder=drop_remainder, batch_fn=list)
    return it_ds
