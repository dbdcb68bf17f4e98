"""A shipped base model's record (``record.json``, written by
`upt_jax.studies.base_model.ship_base`) and how a rebuild is judged against it: per tier and rate
within a tolerance (`compare_to_record`), held-out tiers also within the range the record keeps over
seeds (`spread_passes`, `seed_range`), extrapolation tiers reported without a verdict
(`reported_lines`); and the record's updates (`record_rebuild`, `remeasure_record`). Plain JSON, no
model: `experiments/pretrain_hint.py` measures, this module compares.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

__all__ = [
    "compare_to_record",
    "reported_lines",
    "spread_passes",
    "seed_measurements",
    "seed_range",
    "record_rebuild",
    "remeasure_record",
]


def compare_to_record(
    measured: dict,
    record: dict,
    *,
    tolerance: float = 0.05,
    spread_tiers: Sequence[str] = (),
    reported_tiers: Sequence[str] = (),
) -> list[str]:
    """The disagreements between ``measured`` (`measure_tiers`) and a shipped ``record``: one line
    per tier and rate that differs by more than ``tolerance`` (absolute), or is missing. Empty:
    the rebuild matches the record.

    A rate of one of ``spread_tiers`` (a family's held-out tiers: what the stopping rule does not
    train, so their base rate is how a seed happens to extrapolate) also passes within
    ``tolerance`` of the range it spans over the record's ``rebuilds`` and the shipped run
    (`seed_range`); such a pass is named by `spread_passes`, not here. ``reported_tiers`` (a
    family's ``ext`` tiers) are not judged at all; `reported_lines` prints them."""
    return [
        f"{tier} {rate}: recorded {rec:.3f}, not measured"
        if got is None
        else f"{tier} {rate}: recorded {rec:.3f}, measured {got:.3f} (|Δ| > {tolerance:.2f})"
        for tier, rate, rec, got, verdict in _judged(measured, record, tolerance, spread_tiers, reported_tiers)
        if verdict in ("missing", "off")
    ]


def reported_lines(measured: dict, record: dict, *, reported_tiers: Sequence[str]) -> list[str]:
    """One line per measured rate of ``reported_tiers``: the measurement, the record and the range
    over the record's seeds (`seed_range`), for tiers a check reports without judging."""
    return [
        f"{tier} {rate}: measured {got:.3f}, record {rec:.3f}, seeds [{lo:.3f}, {hi:.3f}]"
        for tier, rate, rec, got, verdict in _judged(measured, record, 0.0, (), reported_tiers)
        if verdict == "reported"
        for lo, hi in [seed_range(record, tier, rate)]
    ]


def spread_passes(
    measured: dict, record: dict, *, tolerance: float = 0.05, spread_tiers: Sequence[str] = ()
) -> list[str]:
    """The rates of ``spread_tiers`` that differ from the record by more than ``tolerance`` but lie
    within ``tolerance`` of the range recorded over seeds (`compare_to_record` passes them): one
    line each, so that a check says which of its passes were by the seeds' spread."""
    n = len(seed_measurements(record))
    out = []
    for tier, rate, rec, got, verdict in _judged(measured, record, tolerance, spread_tiers):
        if verdict == "spread":
            lo, hi = seed_range(record, tier, rate)
            out.append(
                f"{tier} {rate}: measured {got:.3f}, {abs(got - rec):.3f} from the record, "
                f"within {tolerance:.2f} of the range over {n} seeds [{lo:.3f}, {hi:.3f}]"
            )
    return out


def _judged(
    measured: dict, record: dict, tolerance: float, spread_tiers: Sequence[str], reported_tiers: Sequence[str] = ()
):
    """``(tier, rate, recorded, measured or None, verdict)`` for every rate of the record: ``ok``
    (within ``tolerance`` of it), ``spread`` (a rate of ``spread_tiers`` only within ``tolerance``
    of the seeds' range), ``off`` or ``missing``; a measured rate of ``reported_tiers``:
    ``reported`` (not judged; unmeasured, left out)."""
    for tier, rec in record["measured"].items():
        got = measured.get(tier, {})
        for rate in _rates(rec):
            if tier in reported_tiers:
                if rate in got:
                    yield tier, rate, rec[rate], got[rate], "reported"
            elif rate not in got:
                yield tier, rate, rec[rate], None, "missing"
            elif abs(got[rate] - rec[rate]) <= tolerance:
                yield tier, rate, rec[rate], got[rate], "ok"
            elif tier in spread_tiers and _in_range(got[rate], seed_range(record, tier, rate), tolerance):
                yield tier, rate, rec[rate], got[rate], "spread"
            else:
                yield tier, rate, rec[rate], got[rate], "off"


def seed_measurements(record: dict) -> dict[str, dict]:
    """``{seed: measured}``: the shipped run's rates and every rebuild's the record keeps
    (`record_rebuild`), all under the record's protocol."""
    return {str(record.get("seed", "shipped")): record["measured"]} | {
        s: r["measured"] for s, r in record.get("rebuilds", {}).items()
    }


def seed_range(record: dict, tier: str, rate: str) -> tuple[float, float]:
    """``(lowest, highest)`` of ``tier``'s ``rate`` over `seed_measurements`."""
    values = [m[tier][rate] for m in seed_measurements(record).values() if rate in m.get(tier, {})]
    return min(values), max(values)


def record_rebuild(base_dir: str, seed: int, measured: dict, **about) -> dict:
    """Add a rebuild's ``measured`` rates (under the record's protocol) to the shipped record in
    ``base_dir`` as ``rebuilds[seed]`` with ``about`` (its step, commit, host, ...); the weights and
    their checksum are untouched. Refuses the shipped run's own seed. Returns the record."""

    def add(record):
        if str(seed) == str(record.get("seed")):
            raise ValueError(f"seed {seed} is the shipped run's own; a rebuild is another seed")
        record.setdefault("rebuilds", {})[str(seed)] = {"measured": measured, **about}

    return _rewrite_record(base_dir, add)


def remeasure_record(base_dir: str, measured: dict, protocol: dict) -> dict:
    """Replace the shipped record's ``measured`` rates and ``protocol`` in ``base_dir`` (after the
    protocol or the family's tiers changed), keeping the old ones as ``previous``. Rebuilds measured
    under another protocol are dropped (a rebuild is re-added by checking its run again); the weights
    and their checksum are untouched. Returns the record."""

    def replace(record):
        if protocol != record["protocol"]:
            record.pop("rebuilds", None)
        record["previous"] = {"protocol": record["protocol"], "measured": record["measured"]}
        record["protocol"], record["measured"] = dict(protocol), measured

    return _rewrite_record(base_dir, replace)


def _rewrite_record(base_dir: str, change) -> dict:
    """Read ``base_dir``'s record, apply ``change(record)`` (in place; it may raise, leaving the file
    as it was) and write it back. Returns the record."""
    from upt_jax.train.run_model import RECORD_FILE

    path = os.path.join(base_dir, RECORD_FILE)
    with open(path) as f:
        record = json.load(f)
    change(record)
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    return record


def _rates(rec: dict) -> list[str]:
    return [k for k in rec if k == "greedy" or k.startswith(("avg@", "pass@"))]


def _in_range(x: float, lo_hi: tuple[float, float], tolerance: float) -> bool:
    return lo_hi[0] - tolerance <= x <= lo_hi[1] + tolerance
