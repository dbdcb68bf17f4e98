"""The layout's arrows only point down (issue #19): no module of ``upt_jax`` imports a module of a
higher layer, ``eval`` never imports ``train``, the library never imports ``experiments/`` (config
files, loaded by path), and no two modules import each other, directly or through others.

Evaluation (sampling, verifying, metrics, reports, reading evaluation files) is a layer below
training, so the training loop's in-training evaluation imports it; what needs a trained model or
trains sits above training: the comparison (``studies``), ``upt eval`` (``eval_cli``).

Imports are read from the source (``ast``), function-local ones included: an import inside a
function is still an arrow. No violation and no cycle is allowed (no allow-list).
"""

import ast
from pathlib import Path

import upt_jax

PACKAGE = Path(upt_jax.__file__).parent

# the first name under upt_jax -> its layer; a module may import its own layer and those below
LAYERS = {
    "upge": 0,
    "hostinfo": 0,
    "config_files": 0,
    "models": 1,
    "sampling": 2,
    "rewards": 2,
    "data": 2,
    "eval": 3,
    "train": 4,
    "bases": 4,
    "studies": 5,
    "dispatch": 6,
    "cli": 7,
    "eval_cli": 7,
}
FORBIDDEN = {("eval", "train"): "evaluation never imports training (issue #19)"}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module ``name`` imports (any depth in the file): ``from a import b`` is an import of
    module ``a.b`` when that is a module, else of ``a``; relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
            out |= subs if len(subs) == len(node.names) else subs | {base}
    return out - {name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def _layer(module: str) -> tuple[str, int] | None:
    parts = module.split(".")
    if parts[0] != "upt_jax" or len(parts) < 2:
        return None  # upt_jax/__init__.py, or outside the package
    return parts[1], LAYERS[parts[1]]


def layer_violations(g) -> dict[tuple[str, str], str]:
    out = {}
    for a, targets in g.items():
        la = _layer(a)
        for b in targets:
            if b == "experiments" or b.startswith("experiments."):
                out[(a, b)] = "the library imports a config file"
                continue
            lb = _layer(b)
            if la is None or lb is None:
                continue
            if (la[0], lb[0]) in FORBIDDEN:  # whatever the layers say
                out[(a, b)] = FORBIDDEN[(la[0], lb[0])]
            elif lb[1] > la[1]:
                out[(a, b)] = f"{la[0]} (layer {la[1]}) imports {lb[0]} (layer {lb[1]})"
    return out


def cycles(g) -> set[frozenset]:
    """The strongly connected sets of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), set()

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.add(frozenset(comp))

    for v in g:
        if v not in index:
            visit(v)
    return found


_BY_NAME = {"import_module", "find_spec", "__import__", "import_string"}


def imports_by_name(path: Path) -> list[str]:
    """The module names ``path`` imports (or looks up) by a string: ``importlib.import_module(
    "x.y")``, ``find_spec(f"x.{name}")``, ``__import__("x")``; an f-string by its literal head."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        f = node.func
        if (f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)) not in _BY_NAME:
            continue
        arg = node.args[0]
        if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
            arg = arg.values[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            out.append(arg.value)
    return out


def test_the_library_never_imports_experiments():
    """experiments/ are config files loaded by path (`upt_jax.config_files`): no module of upt_jax
    imports them, by an import statement or by name, and setup.py does not install them."""
    by_name = {
        name: hits
        for name, path in modules().items()
        if (hits := [m for m in imports_by_name(path) if m.split(".")[0] == "experiments"])
    }
    by_statement = {k: v for k, v in layer_violations(graph()).items() if v == "the library imports a config file"}
    assert not by_name and not by_statement, (by_name, by_statement)
    setup = (PACKAGE.parent / "setup.py").read_text()
    assert '"experiments"' not in setup, "setup.py installs experiments/ as a package"


def test_the_parser_sees_imports_by_name(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        "import importlib\ndef f(name):\n    importlib.import_module(f'experiments.{name}')\n"
        "    importlib.util.find_spec('experiments')\n    __import__('os')\n"
    )
    assert imports_by_name(f) == ["experiments.", "experiments", "os"]


def test_every_package_and_top_level_module_has_a_layer():
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} | {
        p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"
    } == set(LAYERS)


def test_the_parser_sees_function_local_and_relative_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        "def f():\n    from upt_jax.train import trainer\n    import upt_jax.upge as u\n"
        "from . import sibling\nfrom .sibling import name\n"
    )
    got = imports("upt_jax.eval.m", f, {"upt_jax.train.trainer", "upt_jax.eval.sibling"})
    assert got == {"upt_jax.train.trainer", "upt_jax.upge", "upt_jax.eval.sibling"}


def test_no_import_from_a_higher_layer():
    found = layer_violations(graph())
    assert not found, "imports against the layers (move the code down a layer instead):\n" + "\n".join(
        f"  {a} -> {b}: {why}" for (a, b), why in sorted(found.items())
    )


def test_the_rules_flag_an_upward_import_and_evaluation_importing_training():
    g = {
        "upt_jax.eval.e": {"upt_jax.train.t", "upt_jax.data.d"},
        "upt_jax.data.d": set(),
        "upt_jax.train.t": {"upt_jax.eval.e", "upt_jax.studies.s"},
        "upt_jax.studies.s": {"upt_jax.train.t"},
        "upt_jax.eval_cli": {"upt_jax.train.t", "upt_jax.eval.e"},
    }
    assert set(layer_violations(g)) == {("upt_jax.eval.e", "upt_jax.train.t"), ("upt_jax.train.t", "upt_jax.studies.s")}
    assert "never imports training" in layer_violations(g)[("upt_jax.eval.e", "upt_jax.train.t")]


def test_no_import_cycle():
    found = cycles(graph())
    assert not found, (
        "modules that import each other, directly or through others (move the shared part "
        "down a layer, or pass it in):\n" + "\n".join(f"  {sorted(c)}" for c in found)
    )


def test_the_cycle_finder_sees_a_cycle_through_several_modules():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": {"e"}}
    assert cycles(g) == {frozenset({"a", "b", "c"}), frozenset({"e", "e2"})}


MAX_MODULE_LINES = 450


def test_no_module_over_450_lines():
    """Each module of upt_jax stays ≤ 450 lines (split by responsibility, not by line count); the
    formatter (ruff.toml: 4 spaces, 120 columns) must not push one over either, so leave room."""
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by responsibility): {long}"


def test_the_tree_is_formatted_with_the_one_formatter_config():
    """``ruff format --check`` with ``ruff.toml`` (4 spaces, double quotes, 120 columns; notebooks/
    are jupytext pairs, left out): ``make format`` fixes what this finds."""
    import subprocess
    import sys

    root = PACKAGE.parent
    assert (root / "ruff.toml").is_file()
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "."], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, "not formatted (run `make format`):\n" + (out.stdout + out.stderr)[-3000:]
