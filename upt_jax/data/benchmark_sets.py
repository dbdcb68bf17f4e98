"""The bundled evaluation sets, loadable by name.

| name            | items | answers                  | verifier |
|-----------------|-------|--------------------------|----------|
| ``aime24``      | 30    | integers                 | math     |
| ``aime25``      | 30    | integers                 | math     |
| ``amc23``       | 40    | numbers                  | math     |
| ``math500``     | 500   | LaTeX expressions        | math     |
| ``minerva``     | 272   | numbers, some with units | math     |
| ``olympiadbench``| 674  | LaTeX expressions        | math     |
| ``gpqa_diamond``| 198   | a letter A–D             | choice   |

The files (``upt_jax/data/benchmarks/*.json``, ``[{"prompt", "answer", ...}]``) come
from the Unify-Post-Training repository (MIT licence, ``LICENSE-Unify-Post-Training``
beside them). Records have the keys of `upt_jax.data.readers` plus ``benchmark`` and
``verifier``; a gold answer written as ``\\boxed{x}`` or ``$x$`` is stored as ``x``.

Example::

  >>> items = load_benchmark("aime24")
  >>> len(items), items[0]["answer"]
  (30, '204')
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
from typing import Any

__all__ = ["BenchmarkInfo", "BENCHMARKS", "benchmark_names", "load_benchmark"]


@dataclasses.dataclass(frozen=True)
class BenchmarkInfo:
    name: str
    filename: str
    size: int
    verifier: str  # "math" or "choice"


BENCHMARKS = {
    b.name: b
    for b in (
        BenchmarkInfo("aime24", "AIME24.json", 30, "math"),
        BenchmarkInfo("aime25", "AIME25.json", 30, "math"),
        BenchmarkInfo("amc23", "AMC23.json", 40, "math"),
        BenchmarkInfo("math500", "MATH-500.json", 500, "math"),
        BenchmarkInfo("minerva", "Minerva.json", 272, "math"),
        BenchmarkInfo("olympiadbench", "Olympiad-Bench.json", 674, "math"),
        BenchmarkInfo("gpqa_diamond", "GPQA.json", 198, "choice"),
    )
}
_ALIASES = {"gpqa": "gpqa_diamond", "gpqadiamond": "gpqa_diamond", "olympiad": "olympiadbench"}


def benchmark_names() -> tuple[str, ...]:
    return tuple(BENCHMARKS)


def _canonical(name: str) -> str:
    key = name.lower().replace("-", "").replace("_", "").replace(" ", "")
    key = _ALIASES.get(key, key)
    for canonical in BENCHMARKS:
        if canonical.replace("_", "") == key.replace("_", ""):
            return canonical
    raise KeyError(f"unknown benchmark {name!r}; available: {benchmark_names()}")


def strip_wrappers(answer: str) -> str:
    """``\\boxed{x}`` → ``x`` and ``$x$`` → ``x`` when they wrap the whole answer."""
    s = answer.strip()
    if s.endswith("$."):
        s = s[:-1]
    while True:
        if len(s) >= 2 and s.startswith("$") and s.endswith("$") and "$" not in s[1:-1]:
            s = s[1:-1].strip()
        elif s.startswith("\\boxed{") and s.endswith("}"):
            inner, depth = s[len("\\boxed{") : -1], 0
            for ch in inner:
                depth += {"{": 1, "}": -1}.get(ch, 0)
                if depth < 0:
                    return s
            if depth != 0:
                return s
            s = inner.strip()
        else:
            return s


def load_benchmark(name: str) -> list[dict[str, Any]]:
    """The items of a bundled benchmark, in file order.

    Args:
      name: ``aime24``, ``aime25``, ``amc23``, ``math500`` (or ``MATH-500``),
        ``minerva``, ``olympiadbench``, ``gpqa_diamond`` (or ``gpqa``).

    Returns:
      Records ``{"id", "question", "answer", "benchmark", "verifier", ...}``; ids are
      the file's ids where it has them, else ``"{name}/{index}"``.
    """
    info = BENCHMARKS[_canonical(name)]
    path = importlib.resources.files("upt_jax") / "data" / "benchmarks" / info.filename
    rows = json.loads(path.read_text(encoding="utf-8"))
    records = []
    for index, row in enumerate(rows):
        records.append(
            {
                "id": f"{info.name}/{row.get('id', index)}",
                "question": row["prompt"],
                "answer": strip_wrappers(str(row["answer"])),
                "demonstration": None,
                "chosen": None,
                "rejected": None,
                "location": f"{info.filename}: item {index}",
                "benchmark": info.name,
                "verifier": info.verifier,
            }
        )
    if len(records) != info.size:
        raise ValueError(f"{info.filename}: {len(records)} items, expected {info.size}")
    return records
