"""Committed results carry no machine's absolute paths: a run directory or a shipped base recorded
in docs/ (config.json, results.json, sweep records) is relative to the repository (``runs/…``,
``upt_jax/bases/…``), and a report's links and plots are relative, so a reader's clone can follow
them (studies write them so, `upt_jax.studies.comparison_report.shown_path`)."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _strings(x):
    if isinstance(x, str):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from _strings(v)


def test_committed_records_and_reports_name_no_absolute_paths():
    bad = []
    for p in sorted((ROOT / "docs").rglob("*.json")):
        bad += [f"{p.relative_to(ROOT)}: {s}" for s in _strings(json.loads(p.read_text())) if s.startswith("/")]
    for p in [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md", ROOT / "BENCHMARKS.md"]:
        text = p.read_text()
        links = re.findall(r"\]\((/[^)]*)\)", text)  # markdown links and images
        files = re.findall(r"`(/[^`\s]*\.(?:png|json|md|jsonl))`", text)  # a plot or record named in backticks
        bad += [f"{p.relative_to(ROOT)}: {s}" for s in links + files]
    assert not bad, "\n".join(bad[:20])
