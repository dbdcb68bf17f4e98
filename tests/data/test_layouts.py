"""Data a user already has (issue #21, item 2), read without field-mapping flags: chat ``messages``
(SFT on the assistant turns only, multi-turn), TRL prompt/completion (standard and conversational),
chosen/rejected (explicit and implicit prompt), unpaired (prompt, completion, label), a ``datasets``
directory saved to disk, the LUFFY/HPT parquet layout, and duplicate questions as a policy."""

import json

import pytest

from tests.train.test_hf_handoff import make_hf_dir
from upt_jax.data import layouts, readers
from upt_jax.data.readers import DataConfig, DataError

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "1+1?"},
    {"role": "assistant", "content": "2"},
    {"role": "user", "content": "and 2+2?"},
    {"role": "assistant", "content": "4"},
]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from upt_jax.data import load_tokenizer

    return load_tokenizer(make_hf_dir(tmp_path_factory.mktemp("hf") / "tiny-qwen2"))


def test_layouts_are_told_from_the_columns():
    assert layouts.detect({"question": "q", "prompt": "p"}) == "native"
    assert layouts.detect({"messages": CHAT}) == "messages"
    assert layouts.detect({"prompt": "p", "chosen": "a", "rejected": "b"}) == "preference"
    assert layouts.detect({"chosen": CHAT, "rejected": CHAT}) == "preference"
    assert layouts.detect({"prompt": "p", "completion": "c", "label": True}) == "unpaired"
    assert layouts.detect({"prompt": "p", "completion": "c"}) == "prompt_completion"
    assert layouts.detect({"prompt": [{"role": "user", "content": "p"}], "target": "t"}) == "prompt_only"


def test_messages_rows_multi_turn(tmp_path):
    path = _jsonl(
        tmp_path / "chat.jsonl", [{"messages": CHAT, "topic": "sums"}, {"messages": CHAT[1:3], "id": "single"}]
    )
    records, _ = readers.load_records(DataConfig(path=path, task="sft"))
    a, b = records
    assert a["layout"] == "messages" and a["messages"] == CHAT and a["prompt_messages"] == CHAT[:4]
    assert a["question"] == "and 2+2?" and a["demonstration"] == "4" and a["columns"] == {"topic": "sums"}
    assert b["id"] == "single" and b["prompt_messages"] == CHAT[1:2] and b["demonstration"] == "2"


def test_sft_on_a_chat_trains_on_every_assistant_turn_and_nothing_else(tok):
    from upt_jax.data.chat import conversation_ids, sft_example

    prompt, response, mask = conversation_ids(tok, CHAT)
    assert len(response) == len(mask)
    full = tok.hf.apply_chat_template(CHAT, tokenize=False)
    assert tok.decode(prompt + response, skip_special_tokens=False) == full
    trained = tok.decode([t for t, m in zip(response, mask) if m], skip_special_tokens=False)
    assert trained == "2<|im_end|>\n4<|im_end|>\n"
    # the second user turn is in the row but not trained on
    untrained = tok.decode([t for t, m in zip(response, mask) if not m], skip_special_tokens=False)
    assert "and 2+2?" in untrained and "4" not in untrained
    assert tok.decode(prompt, skip_special_tokens=False) == tok.apply_chat_template(CHAT[:2])
    # a system prompt from the config replaces the row's
    p2, _, _ = conversation_ids(tok, CHAT, system_prompt="Think.")
    assert "Think." in tok.decode(p2, skip_special_tokens=False)
    with pytest.raises(ValueError, match="data.template=chat"):
        sft_example(tok, {"messages": CHAT, "id": "x"}, template="zero")


def test_trl_prompt_completion_standard_and_conversational(tmp_path, tok):
    from upt_jax.data.chat import sft_example
    from upt_jax.data.templates import prompt_ids

    conv = {"prompt": [{"role": "user", "content": "3+4?"}], "completion": [{"role": "assistant", "content": "7"}]}
    path = _jsonl(tmp_path / "pc.jsonl", [{"prompt": "3+4=", "completion": "7"}, conv])
    std, chat = readers.load_records(DataConfig(path=path, task="sft"))[0]
    assert (std["question"], std["demonstration"], std.get("prompt_messages")) == ("3+4=", "7", None)
    assert chat["prompt_messages"] == conv["prompt"] and chat["messages"] == conv["prompt"] + conv["completion"]
    assert prompt_ids(tok, chat, "chat") == tok.encode(tok.apply_chat_template(conv["prompt"]))
    p, r, m = sft_example(tok, chat, template="chat")
    assert tok.decode(r, skip_special_tokens=False) == "7<|im_end|>\n" and m == [1.0] * len(r)
    p, r, m = sft_example(tok, std, template="plain")
    assert tok.decode(p) == "3+4=\n" and r == tok.encode("7") + [tok.eos_id]


def test_preferences_explicit_and_implicit_prompt(tmp_path):
    implicit = {"chosen": CHAT[1:3], "rejected": CHAT[1:2] + [{"role": "assistant", "content": "3"}]}
    path = _jsonl(tmp_path / "pref.jsonl", [{"prompt": "1+1?", "chosen": "2", "rejected": "3"}, implicit])
    a, b = readers.load_records(DataConfig(path=path, task="dpo"))[0]
    assert (a["question"], a["chosen"], a["rejected"]) == ("1+1?", "2", "3")
    assert b["prompt_messages"] == CHAT[1:2] and (b["chosen"], b["rejected"]) == ("2", "3")
    bad = _jsonl(tmp_path / "bad.jsonl", [{"chosen": "2", "rejected": "3"}])
    with pytest.raises(DataError, match=r"bad\.jsonl:1: a preference row without 'prompt'"):
        readers.load_records(DataConfig(path=bad, task="dpo"))


def test_unpaired_rows_sft_keeps_the_positive_ones_and_counts_the_rest(tmp_path):
    path = _jsonl(
        tmp_path / "kto.jsonl",
        [
            {"prompt": "1+1=", "completion": "2", "label": True, "answer": 2},
            {"prompt": "1+2=", "completion": "4", "label": False, "answer": 3},
            {"prompt": "1+3=", "completion": "4", "label": "yes", "answer": 4},
        ],
    )
    records, stats = readers.load_records(DataConfig(path=path, task="sft", skip_bad_rows=True))
    assert [r["question"] for r in records] == ["1+1="] and records[0]["label"] is True
    assert stats.skipped_by_reason == {"negative_label": 1, "wrong_type": 1}
    # an RL dataset keeps every prompt (the label says nothing about a rollout)
    records, _ = readers.load_records(DataConfig(path=path, task="rl", skip_bad_rows=True))
    assert [r["answer"] for r in records] == ["2", "3"] and records[1]["label"] is False


def test_malformed_chat_is_a_bad_row(tmp_path):
    path = _jsonl(tmp_path / "m.jsonl", [{"messages": [{"role": "user"}]}, {"messages": "hi"}, {"messages": CHAT}])
    with pytest.raises(DataError, match=r"m\.jsonl:1: 'messages'\[0\] must be"):
        readers.load_records(DataConfig(path=path, task="sft"))
    records, stats = readers.load_records(DataConfig(path=path, task="sft", skip_bad_rows=True))
    assert len(records) == 1 and stats.skipped_by_reason == {"bad_messages": 2}


def test_luffy_parquet_layout(tmp_path):
    """OpenR1-Math-46k as LUFFY/HPT ship it: a chat prompt, the target solution as an assistant
    message, the answer under reward_model.ground_truth, and other columns passed on."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {
            "data_source": "openr1",
            "prompt": [{"role": "system", "content": "Box it."}, {"role": "user", "content": f"{i}+1?"}],
            "target": [{"role": "assistant", "content": f"so \\boxed{{{i + 1}}}"}],
            "reward_model": {"ground_truth": str(i + 1), "style": "rule"},
            "extra_info": {"index": i},
        }
        for i in range(3)
    ]
    path = str(tmp_path / "openr1.parquet")
    pq.write_table(pa.Table.from_pylist(rows), path)
    records, _ = readers.load_records(DataConfig(path=path, task="hpt"))
    r = records[2]
    assert r["layout"] == "prompt_only" and r["question"] == "2+1?" and r["answer"] == "3"
    assert r["demonstration"] == "so \\boxed{3}" and r["prompt_messages"] == rows[2]["prompt"]
    assert r["columns"]["data_source"] == "openr1" and r["columns"]["extra_info"] == {"index": 2}


def test_a_datasets_directory_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([{"messages": CHAT}, {"messages": CHAT[1:3]}]).save_to_disk(str(tmp_path / "ds"))
    records, _ = readers.load_records(DataConfig(path=str(tmp_path / "ds"), task="sft"))
    assert [r["demonstration"] for r in records] == ["4", "2"] and records[0]["messages"] == CHAT


def test_duplicate_questions_are_a_policy(tmp_path):
    path = _jsonl(
        tmp_path / "dup.jsonl", [{"question": "1+1", "answer": "2"}] * 2 + [{"question": "2+2", "answer": "4"}]
    )
    keep, stats = readers.load_records(DataConfig(path=path, task="rl", duplicate_ids="keep"))
    assert len(keep) == 3 and stats.duplicates == 1 and stats.metrics()["data/duplicates"] == 1
    drop, stats = readers.load_records(DataConfig(path=path, task="rl", duplicate_ids="drop"))
    assert len(drop) == 2 and stats.skipped_by_reason == {"duplicate_id": 1}
    with pytest.raises(DataError, match="duplicate question id"):
        readers.load_records(DataConfig(path=path, task="rl", duplicate_ids="error"))


def test_sft_trainer_on_a_messages_file_masks_user_turns(tmp_path, caplog):
    """``upt train`` SFT on a multi-turn messages JSONL (no field flags): the step's loss mask covers
    the assistant turns only; a repeated conversation is kept and counted."""
    import jax

    from tests.train.test_hf_handoff import sft_config
    from upt_jax.train.trainer import Trainer

    hf = make_hf_dir(tmp_path / "hf")
    path = _jsonl(tmp_path / "chat.jsonl", [{"messages": CHAT}] * 2 + [{"messages": CHAT[1:3]}] * 2)
    c = sft_config(tmp_path / "run", hf, steps=1)
    c.data.source, c.data.path, c.train.questions_per_step = "file", path, 4
    with caplog.at_level("INFO", logger="upt_jax"):
        t = Trainer(c)
    try:
        assert any("2 rows repeat an earlier question" in r.getMessage() for r in caplog.records)
        rows, _, _ = t.batch(list(t.records), jax.random.key(0))
        for i, rec in enumerate(t.records):
            trained = t.tok.decode(rows["tokens"][i][rows["mask"][i] > 0], skip_special_tokens=False)
            turns = [m["content"] for m in rec["messages"] if m["role"] == "assistant"]
            assert trained == "".join(x + "<|im_end|>\n" for x in turns)
        assert t.records.data_metrics["data/duplicates"] == 2  # in every step's metrics
    finally:
        t.close()
    c.data.template = "zero"
    c.run_dir = str(tmp_path / "run2")
    with pytest.raises(ValueError, match=r"config.data.template='zero': .*chat.jsonl:1 is a chat row"):
        Trainer(c)
