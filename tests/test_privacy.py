"""Nothing outside the package (tests/, benchmarks/, notebooks/, experiments/) touches a private member
of upt_jax (issue #19): no ``from upt_jax.m import _name``, no ``obj._name`` on an upt_jax module, class
or object. What a test, notebook or benchmark needs is public API.

Read from the source (``ast``): ``x._name`` is allowed only when ``x`` is ``self``/``cls``/``super()``
(the file's own classes) or is rooted at a name imported from outside upt_jax (``os._exit``, fsspec's
internals, a test module's helpers); any other root (a local variable such as a ``Trainer``, an
upt_jax import) counts, unless listed in ``ALLOWED`` with why.
"""

import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("tests", "benchmarks", "notebooks", "experiments")

# (file relative to the repository root, the accessed expression) -> why it is allowed
ALLOWED = {
    ("tests/test_privacy.py", "x._name"): "this test's own example of what it forbids",
}


def sources():
    """``(relative path, python source)`` of every scanned file (notebooks: their code cells)."""
    for top in SCANNED:
        for p in sorted((ROOT / top).rglob("*.py")):
            yield str(p.relative_to(ROOT)), p.read_text()
        for p in sorted((ROOT / top).rglob("*.ipynb")):
            cells = json.loads(p.read_text())["cells"]
            code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
            yield (
                str(p.relative_to(ROOT)),
                "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!"))),
            )


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _imports(tree) -> dict[str, bool]:
    """Each name a file binds by import -> whether it comes from upt_jax."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = a.name.split(".")[0] == "upt_jax"
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            for a in node.names:
                out[a.asname or a.name] = (node.module or "").split(".")[0] == "upt_jax"
    return out


def _root(node):
    """The innermost expression an attribute/call/subscript chain starts from."""
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super":
            return node
        node = node.func if isinstance(node, ast.Call) else node.value
    return node


def violations(path: str, source: str) -> list[str]:
    tree = ast.parse(source, path)
    imported = _imports(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "upt_jax":
            found += [
                f"{path}:{node.lineno}: from {node.module} import {a.name}" for a in node.names if _private(a.name)
            ]
        if not (isinstance(node, ast.Attribute) and _private(node.attr)):
            continue
        root = _root(node.value)
        if isinstance(root, ast.Call) or (isinstance(root, ast.Name) and root.id in ("self", "cls")):
            continue  # super()._x, self._x: the file's own classes
        if isinstance(root, ast.Name) and imported.get(root.id) is False:
            continue  # rooted at a module or object from outside upt_jax
        expr = ast.unparse(node)
        if (path, expr) not in ALLOWED:
            found.append(f"{path}:{node.lineno}: {expr}")
    return found


def test_nothing_outside_the_package_touches_a_private_member():
    found = [v for path, src in sources() for v in violations(path, src)]
    assert not found, "private members of upt_jax used outside the package (add public API instead):\n" + "\n".join(
        f"  {v}" for v in found
    )


def test_the_scan_sees_private_access_through_objects_modules_and_imports():
    src = (
        "import os\nfrom upt_jax.train import trainer as lib\nfrom upt_jax.train.step import _hidden\n"
        "from tests.train import test_checkpoint as tc\n"
        "t = lib.Trainer(c)\nt._batch(r)\nlib._validate(c)\nos._exit(0)\ntc._truncate(p)\n"
        "class A(B):\n    def f(self):\n        return self._x, super()._y\n"
    )
    got = violations("probe.py", src)
    assert [v.split(": ", 1)[1] for v in got] == ["from upt_jax.train.step import _hidden", "t._batch", "lib._validate"]
    assert violations("tests/test_privacy.py", "x._name\n") == []  # ALLOWED entries pass
