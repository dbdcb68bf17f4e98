"""``benchmarks/reliability.py`` keeps working: every section of a small run (a few fuzzed
verifier inputs, no kills) handles every attack it makes."""

from benchmarks import reliability


def test_every_section_handles_every_attack(capsys):
    rows = reliability.run(fuzz=10, kills=0)
    assert [r["name"] for r in rows][:3] == [
        "bad configs rejected before compute",
        "corrupted checkpoints handled",
        "bad rows reported",
    ]
    for r in rows:
        assert r["attempted"] > 0 and r["handled"] == r["attempted"], (r["name"], r["failures"])
    assert len(rows) == 5
    assert reliability.main(["--fuzz", "2"]) == 0
    out = capsys.readouterr().out
    assert "| attack | attempted | handled |" in out and "host " in out
