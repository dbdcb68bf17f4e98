"""Training records from ``config.data``: synthetic tiers, files (through `upt_jax.data`'s
readers) or a pre-training corpus; and the (chosen, rejected) pair of a preference record."""

from __future__ import annotations

import logging

from upt_jax.train.kto import uses_kto
from upt_jax.train.run_spec import get_recipe, uses_demos

log = logging.getLogger(__name__)

__all__ = ["load_records", "Records", "corpus_records", "preference_pair"]


def load_records(config, recipe=None) -> list[dict]:
    """Training records from ``config.data`` (synthetic tiers or a file) for the run's recipe
    (``recipe``, default `get_recipe`: demonstrations are required when it trains on them)."""
    from upt_jax.data import DataConfig, load_records as read, tasks

    dc = config.data
    if dc.source == "synthetic":  # tiers of any registered task family (upt_jax.data.tasks)
        return tasks.TierSource(tuple(dc.tiers), dc.n_per_tier, seed=config.seed)
    if dc.source == "corpus":
        return corpus_records(config)
    if dc.source != "file":
        raise ValueError(f"config.data.source must be synthetic, file or corpus, not {dc.source!r}")
    task = {"offline": "sft", "preference": "dpo", "reward_model": "dpo", "prm": "sft"}.get(
        config.mode, "hpt" if uses_demos(config, recipe) else "rl"
    )  # a reward model reads pairs, a PRM demos
    if config.mode == "preference" and uses_kto(get_recipe(config, recipe)):
        task = "kto"  # unpaired (prompt, completion, label) rows
    records, stats = read(
        DataConfig(
            path=dc.path,
            format=dc.format,
            task=task,
            fields=dict(dc.fields.to_dict()),
            skip_bad_rows=dc.skip_bad_rows,
            duplicate_ids=dc.get("duplicates", "keep"),
            verifier=dc.verifier,
            max_row_chars=dc.get("max_row_chars", 1_000_000),
        )
    )
    if stats.rows_skipped:
        dropped = dc.get("duplicates", "keep") == "drop" and stats.duplicates
        log.warning(
            "skipped %d malformed%s rows of %s: %s",
            stats.rows_skipped,
            " or repeated" if dropped else "",
            dc.path,
            stats.metrics(),
        )
    if stats.duplicates:
        log.info(
            "%s: %d rows repeat an earlier question (data.duplicates=%s)",
            dc.path,
            stats.duplicates,
            dc.get("duplicates", "keep"),
        )
    if not records:
        raise ValueError(f"no usable rows in {dc.path}")
    chat = next((r for r in records if r.get("prompt_messages")), None)
    if chat is not None and dc.template != "chat":
        raise ValueError(
            f"config.data.template={dc.template!r}: {chat['location']} is a chat row ({chat['layout']}); "
            "set config.data.template=chat to render it with the tokenizer's chat template"
        )
    return Records(records, stats.metrics())


class Records(list):
    """Records read from files, with the reader's counts (``data/rows_read``, ``data/rows_skipped``,
    ``data/skipped/<reason>``), which every step's metrics carry."""

    def __init__(self, records, data_metrics: dict):
        super().__init__(records)
        self.data_metrics = dict(data_metrics)


def corpus_records(config) -> list[dict]:
    """``config.data.source = "corpus"``: plain language-modelling records ``{"id", "text"}`` of
    the pre-training corpus of the task family that owns ``config.data.corpus.tiers``
    (`upt_jax.data.tasks.TaskFamily.corpus`; the built-in ``arith`` family's is
    `synthetic.pretraining_corpus`), with ``config.data.corpus``'s ``n_docs``, ``tiers`` (repeat a
    tier to weight it), ``demo_fraction``, ``facts_per_doc`` and the family's own ``options``
    (keyword arguments of its ``corpus_doc``, e.g. countdown's ``labelled_facts``), rendered with
    ``config.data.template`` as the evaluation prompts are. Offline mode trains on every token of
    ``text`` (see `upt_jax.train.rows.text_rows`)."""
    from upt_jax.data import tasks

    cc = config.data.corpus
    tiers = tuple(tasks.resolve_tier(t) for t in cc.tiers)
    families = {tasks.task_of(t).name for t in tiers}
    if len(families) != 1:
        raise ValueError(f"config.data.corpus.tiers={tiers}: tiers of one task family, not {sorted(families)}")
    docs = tasks.task_of(tiers[0]).corpus(
        int(cc.n_docs),
        seed=config.seed,
        tiers=tiers,
        template=config.data.template,
        demo_fraction=float(cc.demo_fraction),
        facts_per_doc=int(cc.facts_per_doc),
        **_corpus_options(cc),
    )
    pack = int(cc.get("pack_len", 0) or 0)
    if not pack:
        return [{"id": f"corpus/{config.seed}/{i}", "text": d} for i, d in enumerate(docs)]
    # packing: consecutive documents share a row while their characters (+ one EOS each) fit in
    # pack_len (for the char tokenizer a character is a token), so rows carry little padding
    records, group, used = [], [], 0
    for d in docs:
        if group and used + len(d) + 1 > pack:
            records.append(group)
            group, used = [], 0
        group.append(d)
        used += len(d) + 1
    records.append(group)
    return [{"id": f"corpus/{config.seed}/packed/{i}", "text": g} for i, g in enumerate(records)]


def _corpus_options(cc) -> dict:
    """``config.data.corpus.options`` as keyword arguments of the family's ``corpus_doc`` (a
    config from before the key existed has none)."""
    from upt_jax.train.schema_domains import plain

    return dict(plain(cc.get("options")) or {})


def preference_pair(record) -> tuple[str, str]:
    """``(chosen, rejected)`` of a record; a synthetic record without a rejected answer gets its
    demonstration as ``chosen`` and the same demonstration ending in a wrong answer as ``rejected``."""
    if record.get("chosen") and record.get("rejected"):
        return record["chosen"], record["rejected"]
    demo, answer = record.get("demonstration"), record.get("answer")
    if not demo or answer is None:
        raise ValueError(f"record {record.get('id')} has neither chosen/rejected nor a demonstration")
    wrong = str(int(answer) + 1) if str(answer).lstrip("-").isdigit() else str(answer) + "0"
    tail = "\\boxed{" + str(answer) + "}"
    if tail not in demo:
        raise ValueError(f"record {record.get('id')}: demonstration does not end in {tail}")
    return demo, demo.replace(tail, "\\boxed{" + wrong + "}")
