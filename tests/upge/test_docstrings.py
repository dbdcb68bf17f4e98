"""Every public function of upt_jax.upge has a docstring with the math and the shapes."""

import inspect
import re

import pytest

import upt_jax.upge as upge

SHAPE = re.compile(r"\[(B|P|num_groups)[,\]]|\[\]")
# Public helpers that take no arrays: they must be documented, shapes do not apply.
NO_ARRAYS = {"part", "get_recipe", "recipe_table", "all_recipes"}
MATH = re.compile(r"[=∇Σσ·−≡π]|Math|math")

PUBLIC = sorted(n for n in dir(upge) if not n.startswith("_") and inspect.isfunction(getattr(upge, n)))


def test_the_public_namespace_is_not_empty():
    assert len(PUBLIC) > 60


@pytest.mark.parametrize("name", PUBLIC)
def test_public_function_docstring(name):
    doc = inspect.getdoc(getattr(upge, name))
    assert doc and len(doc.splitlines()) >= 2, f"{name} lacks a docstring"
    if name not in NO_ARRAYS:
        assert SHAPE.search(doc), f"{name}: docstring gives no array shape like [B, T]"
        assert MATH.search(doc), f"{name}: docstring has no math"


@pytest.mark.parametrize("name", ["Part", "Parts", "Term", "Recipe", "KLPenalty"])
def test_data_types_are_documented(name):
    assert inspect.getdoc(getattr(upge, name))


def test_upge_imports_nothing_else_from_the_package():
    import pathlib

    src = pathlib.Path(upge.__file__).parent
    for f in src.glob("*.py"):
        for line in f.read_text().splitlines():
            m = re.match(r"\s*(from|import)\s+(upt_jax\S*)", line)
            if m:
                assert m.group(2).startswith("upt_jax.upge"), f"{f.name}: {line}"
