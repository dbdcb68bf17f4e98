"""Readers: every format gives the same records; malformed rows are reported with file
and line or skipped and counted; iteration is deterministic, sharded and resumable."""

import json
import subprocess
import sys

import grain
import pytest

from upt_jax.data import readers
from upt_jax.data.readers import DataConfig, DataError, FieldMap

ROWS = [
    {
        "uid": f"q{i}",
        "problem": f"What is {i}+{i}?",
        "meta": {"gt": str(2 * i)},
        "solution": f"{i}+{i}={2 * i}\n\\boxed{{{2 * i}}}",
    }
    for i in range(20)
]
FIELDS = FieldMap(question="problem", answer="meta.gt", demonstration="solution", id="uid")


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def sources(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = {"jsonl": _write_jsonl(tmp_path / "d.jsonl", ROWS)}
    (tmp_path / "d.json").write_text(json.dumps(ROWS, indent=2))
    out["json"] = str(tmp_path / "d.json")
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
    out["parquet"] = str(tmp_path / "d.parquet")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "hf"))
    out["hf_disk"] = str(tmp_path / "hf")
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS[:5]), "test": datasets.Dataset.from_list(ROWS[5:])}
    ).save_to_disk(str(tmp_path / "hfdict"))
    out["hf_dict"] = str(tmp_path / "hfdict")
    return out


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet", "hf_disk"])
def test_every_format_gives_the_same_records(sources, fmt):
    records, stats = readers.load_records(DataConfig(path=sources[fmt], task="hpt", fields=FIELDS))
    assert stats.rows_read == stats.rows_kept == 20 and stats.rows_skipped == 0
    assert [r["id"] for r in records] == [f"q{i}" for i in range(20)]
    r = records[7]
    assert (r["question"], r["answer"], r["demonstration"]) == ("What is 7+7?", "14", "7+7=14\n\\boxed{14}")
    assert r["chosen"] is None and r["rejected"] is None and r["verifier"] == "math"
    # explicit format name and auto-detection agree
    explicit, _ = readers.load_records(DataConfig(path=sources[fmt], format=fmt, task="hpt", fields=FIELDS))
    assert [x["id"] for x in explicit] == [x["id"] for x in records]


def test_locations_name_file_and_line(sources):
    jsonl, _ = readers.load_records(DataConfig(path=sources["jsonl"], fields=FIELDS))
    assert jsonl[3]["location"] == f"{sources['jsonl']}:4"
    arr, _ = readers.load_records(DataConfig(path=sources["json"], fields=FIELDS))
    lines = open(sources["json"]).read().split("\n")
    line = int(arr[3]["location"].rsplit(":", 1)[1])
    assert lines[line - 1].strip() == "{" and '"q3"' in lines[line]
    pq, _ = readers.load_records(DataConfig(path=sources["parquet"], fields=FIELDS))
    assert pq[3]["location"] == f"{sources['parquet']}: row 3"


def test_dataset_dict_splits(sources):
    train, _ = readers.load_records(DataConfig(path=sources["hf_dict"], fields=FIELDS))
    test, _ = readers.load_records(DataConfig(path=sources["hf_dict"], split="test", fields=FIELDS))
    assert len(train) == 5 and len(test) == 15 and test[0]["id"] == "q5"
    with pytest.raises(DataError, match="no split 'dev'"):
        readers.load_records(DataConfig(path=sources["hf_dict"], split="dev", fields=FIELDS))


def test_glob_and_lists_of_files(tmp_path):
    _write_jsonl(tmp_path / "a-0.jsonl", ROWS[:3])
    _write_jsonl(tmp_path / "a-1.jsonl", ROWS[3:5])
    records, _ = readers.load_records(DataConfig(path=str(tmp_path / "a-*.jsonl"), fields=FIELDS))
    assert [r["id"] for r in records] == ["q0", "q1", "q2", "q3", "q4"]
    records, _ = readers.load_records(
        DataConfig(path=[str(tmp_path / "a-1.jsonl"), str(tmp_path / "a-0.jsonl")], fields=FIELDS)
    )
    assert [r["id"] for r in records] == ["q3", "q4", "q0", "q1", "q2"]


def test_config_from_dict_and_configdict():
    import ml_collections

    d = {
        "path": "x.jsonl",
        "task": "sft",
        "skip_bad_rows": True,
        "fields": {"question": "prompt", "demonstration": "response", "id": None},
    }
    a = DataConfig.from_dict(d)
    b = DataConfig.from_dict(ml_collections.ConfigDict(d))
    assert a == b and a.fields.question == "prompt" and a.fields.id is None
    with pytest.raises(ValueError, match="unknown task"):
        DataConfig(task="pretrain")
    with pytest.raises(ValueError, match="needs a source column for 'chosen'"):
        DataConfig(task="dpo", fields=FieldMap(chosen=None))


# ----------------------------------------------------------------------------- bad rows

BAD_JSONL = (
    "\n".join(
        [
            '{"uid": "a", "problem": "1+1", "meta": {"gt": "2"}}',  # line 1 ok
            '{"uid": "b", "problem": "2+2", "meta": {"gt": "4"}',  # line 2 bad JSON
            '{"uid": "c", "meta": {"gt": "6"}}',  # line 3 missing question
            '{"uid": "d", "problem": ["3+3"], "meta": {"gt": "6"}}',  # line 4 wrong type
            "",  # line 5 blank: ignored
            '{"uid": "e", "problem": "4+4", "meta": {"gt": 8}}',  # line 6 ok (numeric answer)
            "[1, 2]",  # line 7 not an object
            '{"uid": "a", "problem": "1+1 again", "meta": {"gt": "2"}}',  # line 8 duplicate id
            '{"uid": "f", "problem": "5+5", "meta": {"gt": true}}',  # line 9 bool answer
        ]
    )
    + "\n"
)


@pytest.fixture
def bad_file(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(BAD_JSONL)
    return str(p)


def _rl(path, **kw):
    return DataConfig(path=path, task="rl", fields=FIELDS, **kw)


def test_first_bad_row_raises_with_file_and_line(bad_file):
    with pytest.raises(DataError) as e:
        readers.load_records(_rl(bad_file))
    assert str(e.value).startswith(f"{bad_file}:2: bad JSON")


@pytest.mark.parametrize(
    "line, message",
    [
        (3, "missing field 'question' (column 'problem')"),
        (4, "field 'question' (column 'problem') must be a string, got list"),
        (7, "a row must be an object, got list"),
        (8, "duplicate question id 'a' (first at {f}:1)"),
        (9, "field 'answer' (column 'meta.gt') must be a string, got bool"),
    ],
)
def test_each_kind_of_bad_row_names_file_and_line(tmp_path, line, message):
    lines = BAD_JSONL.split("\n")
    path = tmp_path / "one.jsonl"
    keep = [lines[0]] + [""] * (line - 2) + [lines[line - 1]]  # the bad row stays on `line`
    path.write_text("\n".join(keep) + "\n")
    with pytest.raises(DataError) as e:
        readers.load_records(_rl(str(path)))
    assert str(e.value) == f"{path}:{line}: " + message.format(f=path)


def test_skip_bad_rows_counts_them(bad_file):
    records, stats = readers.load_records(_rl(bad_file, skip_bad_rows=True))
    assert [r["id"] for r in records] == ["a", "e"]
    assert records[1]["answer"] == "8"
    assert (stats.rows_read, stats.rows_kept, stats.rows_skipped) == (8, 2, 6)
    assert stats.metrics() == {
        "data/rows_read": 8,
        "data/rows_kept": 2,
        "data/rows_skipped": 6,
        "data/duplicates": 1,
        "data/skipped/bad_json": 1,
        "data/skipped/duplicate_id": 1,
        "data/skipped/missing_field": 1,
        "data/skipped/wrong_type": 3,
    }
    assert stats.examples[0].startswith(f"{bad_file}:2: bad JSON")


def test_bad_utf8_is_a_bad_row(tmp_path):
    p = tmp_path / "enc.jsonl"
    p.write_bytes(b'{"uid": "a", "problem": "1", "meta": {"gt": "1"}}\n{"uid": "\xff"}\n')
    with pytest.raises(DataError, match=f"{p}:2: not UTF-8"):
        readers.load_records(_rl(str(p)))
    records, stats = readers.load_records(_rl(str(p), skip_bad_rows=True))
    assert len(records) == 1 and stats.skipped_by_reason == {"bad_encoding": 1}


def test_json_array_errors_name_the_line(tmp_path):
    p = tmp_path / "arr.json"
    p.write_text('[\n  {"uid": "a", "problem": "1", "meta": {"gt": "1"}},\n  {"uid": "b", "meta": {"gt": "1"}}\n]\n')
    with pytest.raises(DataError, match=f"^{p}:3: missing field 'question'"):
        readers.load_records(_rl(str(p)))
    p.write_text('[\n  {"uid": "a", "problem": "1", "meta": {"gt": "1"}},\n  {"uid": \n]\n')
    # a syntax error in an array cannot be skipped: the rest of the file is unreadable
    with pytest.raises(DataError, match=f"^{p}:4: bad JSON"):
        readers.load_records(_rl(str(p), skip_bad_rows=True))


def test_parquet_bad_row_names_the_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"question": "1+1", "answer": "2"}, {"question": None, "answer": "3"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    with pytest.raises(DataError, match=r"p\.parquet: row 1: missing field 'question'"):
        readers.load_records(DataConfig(path=str(tmp_path / "p.parquet")))


def test_duplicate_ids_policies(tmp_path):
    rows = [
        {"id": 1, "question": "a", "answer": "1", "demonstration": "d"},
        {"id": 2, "question": "b", "answer": "2", "demonstration": "d"},
        {"id": 1, "question": "c", "answer": "3", "demonstration": "d"},
    ]
    path = _write_jsonl(tmp_path / "dup.jsonl", rows)
    with pytest.raises(
        DataError,
        match=r"dup\.jsonl:3: duplicate question id '1' "
        r"\(first at .*dup\.jsonl:1\)",
    ):
        readers.load_records(DataConfig(path=path, task="rl"))
    records, stats = readers.load_records(DataConfig(path=path, task="rl", duplicate_ids="skip"))
    assert [r["question"] for r in records] == ["a", "b"]
    assert stats.skipped_by_reason == {"duplicate_id": 1}
    records, _ = readers.load_records(DataConfig(path=path, task="sft"))  # sft allows
    assert len(records) == 3


def test_without_an_id_column_repeated_questions_are_duplicates(tmp_path):
    rows = [
        {"question": "same", "answer": "1"},
        {"question": "other", "answer": "1"},
        {"question": "same", "answer": "1"},
    ]
    path = _write_jsonl(tmp_path / "noid.jsonl", rows)
    with pytest.raises(DataError, match=r"noid\.jsonl:3: duplicate question id 'q-"):
        readers.load_records(DataConfig(path=path, task="rl"))
    records, _ = readers.load_records(DataConfig(path=path, task="rl", duplicate_ids="allow"))
    assert records[0]["id"] == records[2]["id"] != records[1]["id"]
    assert records[0]["id"].startswith("q-") and len(records[0]["id"]) == 18


@pytest.mark.parametrize("task", ["sft", "hpt"])
def test_empty_demonstrations_rejected_for_sft_and_hpt(tmp_path, task):
    rows = [
        {"id": "a", "question": "1+1", "answer": "2", "demonstration": "  \n "},
        {"id": "b", "question": "2+2", "answer": "4", "demonstration": "2+2=4"},
    ]
    path = _write_jsonl(tmp_path / "demo.jsonl", rows)
    with pytest.raises(DataError, match=r"demo\.jsonl:1: empty 'demonstration'"):
        readers.load_records(DataConfig(path=path, task=task))
    records, stats = readers.load_records(DataConfig(path=path, task=task, skip_bad_rows=True))
    assert [r["id"] for r in records] == ["b"]
    assert stats.metrics()["data/skipped/empty_demonstration"] == 1
    # The same file is fine for RL, which does not use demonstrations.
    records, _ = readers.load_records(DataConfig(path=path, task="rl"))
    assert len(records) == 2


def test_dpo_needs_chosen_and_rejected(tmp_path):
    rows = [{"question": "q", "chosen": "good", "rejected": "bad"}, {"question": "q2", "chosen": "good"}]
    path = _write_jsonl(tmp_path / "pref.jsonl", rows)
    with pytest.raises(DataError, match=r"pref\.jsonl:2: missing field 'rejected'"):
        readers.load_records(DataConfig(path=path, task="dpo"))


def test_kto_reads_unpaired_labelled_completions(tmp_path):
    """TRL's unpaired layout (prompt, completion, label); labels as bools, 0/1 or true/false;
    anything else is a counted bad row, never a silent label."""
    rows = [
        {"prompt": "q1", "completion": "good", "label": True},
        {"prompt": "q1", "completion": "bad", "label": 0},
        {"prompt": "q2", "completion": "fine", "label": "True"},
        {"prompt": "q3", "completion": "meh", "label": "maybe"},
        {"prompt": "q4", "completion": "", "label": False},
    ]
    path = _write_jsonl(tmp_path / "kto.jsonl", rows)
    fields = FieldMap(question="prompt")
    with pytest.raises(DataError, match=r"kto\.jsonl:4: field 'label' .* is 'maybe'"):
        readers.load_records(DataConfig(path=path, task="kto", fields=fields))
    records, stats = readers.load_records(DataConfig(path=path, task="kto", fields=fields, skip_bad_rows=True))
    assert [(r["question"], r["completion"], r["label"]) for r in records] == [
        ("q1", "good", True),
        ("q1", "bad", False),
        ("q2", "fine", True),
    ]
    assert stats.metrics()["data/skipped/bad_label"] == 1 and stats.metrics()["data/skipped/empty_completion"] == 1
    # the same rows without a field map: the layout is recognised (it used to ask for a 'completion' column)
    ok = _write_jsonl(tmp_path / "kto_ok.jsonl", [dict(r, label=bool(r["label"])) for r in rows[:2]])
    auto, _ = readers.load_records(DataConfig(path=ok, task="kto"))
    assert [(r["question"], r["completion"], r["label"]) for r in auto] == [("q1", "good", True), ("q1", "bad", False)]


# ----------------------------------------------------------------------------- iteration

RECORDS = [{"id": str(i)} for i in range(10)]


def _ids(it, n):
    return [next(it)["id"] for _ in range(n)]


def test_shuffle_is_deterministic_and_reshuffles_each_epoch():
    a = _ids(iter(readers.make_dataset(RECORDS, seed=3, num_epochs=2)), 20)
    b = _ids(iter(readers.make_dataset(RECORDS, seed=3, num_epochs=2)), 20)
    c = _ids(iter(readers.make_dataset(RECORDS, seed=4, num_epochs=2)), 20)
    assert a == b and a != c
    assert sorted(a[:10]) == sorted(a[10:]) == sorted(r["id"] for r in RECORDS)
    assert a[:10] != a[10:]
    assert list(readers.make_dataset(RECORDS, shuffle=False)) == RECORDS


def test_shards_are_disjoint_equal_and_cover():
    shards = [[r["id"] for r in readers.make_dataset(RECORDS, seed=0, shard_index=k, shard_count=3)] for k in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]  # even_shards drops one row
    flat = sum(shards, [])
    assert len(set(flat)) == 9 and set(flat) <= {r["id"] for r in RECORDS}
    uneven = [
        len(list(readers.make_dataset(RECORDS, shard_index=k, shard_count=3, even_shards=False))) for k in range(3)
    ]
    assert uneven == [4, 3, 3]


def test_batches_are_lists_of_records():
    batches = list(readers.make_dataset(RECORDS, shuffle=False, batch_size=4))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert batches[0][1] == RECORDS[1]
    batches = list(readers.make_dataset(RECORDS, batch_size=4, drop_remainder=True))
    assert [len(b) for b in batches] == [4, 4]


def test_iterator_state_resumes_exactly_after_json_round_trip():
    ds = readers.make_dataset(RECORDS, seed=7, num_epochs=None, batch_size=3)
    it = iter(ds)
    for _ in range(5):  # into the second epoch
        next(it)
    state = json.loads(json.dumps(it.get_state()))  # as stored in a checkpoint
    expected = [[r["id"] for r in next(it)] for _ in range(6)]
    resumed = iter(readers.make_dataset(RECORDS, seed=7, num_epochs=None, batch_size=3))
    resumed.set_state(state)
    assert [[r["id"] for r in next(resumed)] for _ in range(6)] == expected


def test_load_dataset_returns_pipeline_and_stats(tmp_path, bad_file):
    ds, stats = readers.load_dataset(_rl(bad_file, skip_bad_rows=True), shuffle=False)
    assert isinstance(ds, grain.IterDataset)
    assert [r["id"] for r in ds] == ["a", "e"] and stats.rows_skipped == 6


# ----------------------------------------------------------------------------- TFDS


def test_core_import_does_not_import_tensorflow():
    code = (
        "import sys, upt_jax.data, upt_jax.rewards; "
        "assert 'tensorflow' not in sys.modules and 'tensorflow_datasets' not in "
        "sys.modules and 'jax' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tfds_without_the_extra_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # as if not installed
    with pytest.raises(ImportError, match=r"upt_jax\[tfds\]"):
        readers.load_records(DataConfig(path="mnist", format="tfds"))


def test_tfds_rows_are_decoded(monkeypatch):
    """The TFDS path with a stand-in module: bytes become str, arrays become lists."""
    import types

    import numpy as np

    fake = types.ModuleType("tensorflow_datasets")
    calls = {}

    def load(name, split, data_dir, shuffle_files):
        calls.update(name=name, split=split, data_dir=data_dir, shuffle=shuffle_files)
        return [{"question": b"1+1", "answer": np.int64(2), "id": b"x"}]

    fake.load = load
    fake.as_numpy = lambda ds: iter(ds)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    records, _ = readers.load_records(DataConfig(path="gsm8k", format="tfds", split="test", tfds_data_dir="/d"))
    assert calls == {"name": "gsm8k", "split": "test", "data_dir": "/d", "shuffle": False}
    assert records[0]["question"] == "1+1" and records[0]["answer"] == "2"
    assert records[0]["location"] == "tfds:gsm8k/test: row 0"


# ----------------------------------------------------------------------------- hostile inputs
# Issue #20 item 5: each of these escaped the reader (or was silently kept) before.


def _one_row(tmp_path, text, name="one.jsonl"):
    """A JSONL file whose line 2 is ``text`` (line 1 is a good row)."""
    path = tmp_path / name
    path.write_text('{"id": "ok", "question": "1+1", "answer": "2"}\n' + text + "\n")
    return str(path)


@pytest.mark.parametrize("answer", ["NaN", "Infinity", "-Infinity", "1e999", '"nan"', '"Infinity"', '"-inf"'])
def test_non_finite_answers_are_bad_rows(tmp_path, answer):
    path = _one_row(tmp_path, '{"id": "b", "question": "q", "answer": %s}' % answer)
    with pytest.raises(
        DataError,
        match=rf"^{path}:2: field 'answer' \(column 'answer'\) is not "
        r"finite",
    ):
        readers.load_records(DataConfig(path=path))
    records, stats = readers.load_records(DataConfig(path=path, skip_bad_rows=True))
    assert [r["id"] for r in records] == ["ok"]
    assert stats.skipped_by_reason == {"non_finite_answer": 1}


def test_non_finite_looking_words_are_kept_where_no_number_is_expected(tmp_path):
    """'Nan' is a fine answer for the ``exact`` verifier; "1e999" is a finite number for
    ``math`` (only the JSON *number* 1e999 overflows to infinity)."""
    path = _one_row(tmp_path, '{"id": "b", "question": "q", "answer": "Nan"}')
    records, _ = readers.load_records(DataConfig(path=path, verifier="exact"))
    assert records[1]["answer"] == "Nan"
    path = _one_row(tmp_path, '{"id": "b", "question": "q", "answer": "1e999"}')
    records, _ = readers.load_records(DataConfig(path=path, verifier="math"))
    assert records[1]["answer"] == "1e999"


@pytest.mark.parametrize("answer", ['"5.5"', "5.5", '"1e3"', '"1/2"', '"5.0"', '"x"', "1e20", '"' + "9" * 101 + '"'])
def test_non_integer_answers_are_bad_rows_for_the_integer_verifier(tmp_path, answer):
    path = _one_row(tmp_path, '{"id": "b", "question": "q", "answer": %s}' % answer)
    with pytest.raises(
        DataError,
        match=rf"^{path}:2: field 'answer' \(column 'answer'\) .*"
        r"DataConfig.verifier='integer'",
    ):
        readers.load_records(DataConfig(path=path, verifier="integer"))
    _, stats = readers.load_records(DataConfig(path=path, verifier="integer", skip_bad_rows=True))
    assert stats.skipped_by_reason == {"non_integer_answer": 1}
    readers.load_records(DataConfig(path=path, verifier="math"))  # fine for math


def test_integral_float_answer_is_written_as_an_integer_for_the_integer_verifier(tmp_path):
    """A float-typed 5.0 (pandas turns an integer column with a gap into floats) is exactly 5:
    it is stored as "5", which the integer verifier reads; other verifiers keep "5.0"."""
    path = _one_row(
        tmp_path, '{"id": "b", "question": "q", "answer": 5.0}\n{"id": "c", "question": "r", "answer": -12}'
    )
    records, _ = readers.load_records(DataConfig(path=path, verifier="integer"))
    assert [r["answer"] for r in records] == ["2", "5", "-12"]
    from upt_jax.rewards import Verifier

    assert Verifier("integer")(["\\boxed{5}"], [records[1]["answer"]])[0].correct
    records, _ = readers.load_records(DataConfig(path=path, verifier="math"))
    assert records[1]["answer"] == "5.0"


def test_deeply_nested_row_is_a_bad_row_with_its_line(tmp_path):
    path = _one_row(tmp_path, '{"question": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(DataError, match=rf"^{path}:2: nested too deeply"):
        readers.load_records(DataConfig(path=path))
    records, stats = readers.load_records(DataConfig(path=path, skip_bad_rows=True))
    assert len(records) == 1 and stats.skipped_by_reason == {"too_deep": 1}


def test_deeply_nested_json_array_element_names_its_line(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('[\n{"question": "1", "answer": "1"},\n{"question": ' + "[" * 100_000 + "]" * 100_000 + "}\n]\n")
    # like a syntax error, it leaves the rest of the array unreadable: never skipped
    with pytest.raises(DataError, match=rf"^{path}:3: nested too deeply"):
        readers.load_records(DataConfig(path=str(path), skip_bad_rows=True))


def test_lone_surrogate_is_a_bad_row_with_its_line(tmp_path):
    # no id column: the id is a hash of the question, which used to raise UnicodeEncodeError
    path = _one_row(tmp_path, '{"question": "2+2 \\ud800", "answer": "4"}')
    with pytest.raises(
        DataError,
        match=rf"^{path}:2: field 'question' \(column 'question'\) is "
        r"not valid Unicode \(lone surrogate U\+D800 at "
        r"character 4\)",
    ):
        readers.load_records(DataConfig(path=path))
    records, stats = readers.load_records(DataConfig(path=path, skip_bad_rows=True))
    assert len(records) == 1 and stats.skipped_by_reason == {"bad_encoding": 1}


def test_json_array_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "enc.json"
    path.write_bytes(b'[\n{"question": "1", "answer": "1"},\n{"question": "\xff", "answer": "1"}\n]')
    with pytest.raises(DataError, match=rf"^{path}:3: not UTF-8"):
        readers.load_records(DataConfig(path=str(path)))


def test_corrupt_parquet_names_the_file(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1" + b"garbage" * 10 + b"PAR1")
    # a corrupt file is a whole-file error: skip_bad_rows does not hide it
    with pytest.raises(DataError, match=rf"^{path}: cannot read this parquet file: "):
        readers.load_records(DataConfig(path=str(path), skip_bad_rows=True))


def test_truncated_parquet_names_the_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = tmp_path / "good.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": str(i), "answer": "1"} for i in range(50)]), good)
    path = tmp_path / "cut.parquet"
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2] + data[-8:])  # footer kept, pages cut
    with pytest.raises(DataError, match=rf"^{path}"):
        readers.load_records(DataConfig(path=str(path)))


def test_parquet_corrupt_mid_file_names_the_file_and_row(tmp_path):
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq

    good = tmp_path / "good.parquet"
    pq.write_table(
        pa.Table.from_pylist([{"question": f"q{i} " * 20, "answer": str(i)} for i in range(3000)]),
        good,
        row_group_size=1000,
        compression="snappy",
    )
    data = bytearray(good.read_bytes())
    rng = random.Random(0)
    for i in range(len(data) // 2, len(data) // 2 + 2000):  # a data page, length kept
        data[i] = rng.randrange(256)
    path = tmp_path / "mid.parquet"
    path.write_bytes(bytes(data))
    # the footer is intact: the error comes while iterating, not on opening
    with pytest.raises(
        DataError,
        match=rf"^{path}: cannot read this parquet file"
        r"( from row \d+ on)?: OSError: ",
    ):
        readers.load_records(DataConfig(path=str(path), skip_bad_rows=True))


def test_corrupt_arrow_file_in_a_saved_dataset_names_the_file(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS[:3]).save_to_disk(str(tmp_path / "hf"))
    (arrow,) = (tmp_path / "hf").glob("*.arrow")
    arrow.write_bytes(b"not arrow at all" * 4)
    with pytest.raises(DataError, match=rf"^{arrow}: cannot read this Arrow file: "):
        readers.load_records(DataConfig(path=str(tmp_path / "hf"), fields=FIELDS, skip_bad_rows=True))


@pytest.mark.parametrize(
    "name, content", [("e.jsonl", ""), ("e.jsonl", "\n  \n"), ("e.json", "[]"), ("e.json", "  [ ]\n")]
)
def test_empty_file_is_an_error_naming_it(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=rf"^{path}: no rows \(an empty file\)"):
        readers.load_records(DataConfig(path=str(path), skip_bad_rows=True))


def test_empty_file_among_others_is_an_error_naming_it(tmp_path):
    _write_jsonl(tmp_path / "a-0.jsonl", ROWS[:3])
    (tmp_path / "a-1.jsonl").write_text("")
    with pytest.raises(DataError, match=rf"^{tmp_path / 'a-1.jsonl'}: no rows"):
        readers.load_records(DataConfig(path=str(tmp_path / "a-*.jsonl"), fields=FIELDS))


def test_empty_parquet_is_an_error_naming_it(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"question": pa.array([], pa.string()), "answer": pa.array([], pa.string())}), path)
    with pytest.raises(DataError, match=rf"^{path}: no rows"):
        readers.load_records(DataConfig(path=str(path)))


def test_all_rows_skipped_is_an_error_naming_the_path(tmp_path, bad_file):
    path = tmp_path / "allbad.jsonl"
    path.write_text(BAD_JSONL.split("\n")[1] + "\n" + BAD_JSONL.split("\n")[2] + "\n")
    with pytest.raises(
        DataError,
        match=rf"^{path}: no usable rows: all 2 rows were skipped "
        r"\(bad_json: 1, missing_field: 1\); first: ",
    ):
        readers.load_records(_rl(str(path), skip_bad_rows=True))


def test_row_over_max_row_chars_is_a_bad_row(tmp_path):
    assert DataConfig().max_row_chars == 1_000_000
    big = "x" * 1_000_001
    path = _one_row(tmp_path, json.dumps({"id": "b", "question": big, "answer": "1"}))
    with pytest.raises(
        DataError,
        match=rf"^{path}:2: row has 1,000,003 characters of text, more "
        r"than DataConfig.max_row_chars=1,000,000",
    ):
        readers.load_records(DataConfig(path=path))
    records, stats = readers.load_records(DataConfig(path=path, skip_bad_rows=True))
    assert len(records) == 1 and stats.skipped_by_reason == {"row_too_long": 1}
    records, _ = readers.load_records(DataConfig(path=path, max_row_chars=None))  # no limit
    assert len(records[1]["question"]) == 1_000_001
    small = _one_row(tmp_path, '{"id": "b", "question": "a long question", "answer": "1"}', name="small.jsonl")
    with pytest.raises(DataError, match="more than DataConfig.max_row_chars=10"):
        readers.load_records(DataConfig(path=small, max_row_chars=10))


def test_config_rejects_bad_limits_and_unknown_verifiers():
    with pytest.raises(ValueError, match="DataConfig.max_row_chars must be a positive"):
        DataConfig(max_row_chars=0)
    with pytest.raises(ValueError, match="DataConfig.verifier: unknown verifier kind 'regex'"):
        DataConfig(verifier="regex")
