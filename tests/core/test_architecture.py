"""The layering holds: every module imports on its own, and sparsearch's import graph has no cycle.

The graph is read from the source (module-level ``import`` / ``from ... import`` statements
naming a sparsearch module), so an import hidden inside a function to dodge a cycle is caught
too: apart from the CLI (whose commands import what they need, to start fast) and the few
places that load optional heavy extras, internal imports are at module top.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


import sparsearch

SRC = Path(sparsearch.__file__).resolve().parent
PKG = "sparsearch"


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def internal_imports(mod: str, path: Path, known: set[str]) -> tuple[set[str], list[tuple[int, str]]]:
    """(modules imported at module level, [(line, module)] imported inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    top: set[str] = set()
    nested: list[tuple[int, str]] = []

    def targets(node: ast.AST) -> list[str]:
        out: list[str] = []
        if isinstance(node, ast.Import):
            out = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(mod, is_pkg, node)
            # "from .pkg import module" imports the submodule; "from .mod import name" the module
            out = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        return [t for t in out if t == PKG or t.startswith(PKG + ".")]

    for node in tree.body:  # module level, including under "if TYPE_CHECKING"/try blocks
        for sub in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                           ast.ClassDef)) else ():
            top.update(targets(sub))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                nested.extend((sub.lineno, t) for t in targets(sub))
    return {t for t in top if t != mod}, nested


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    color: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        color[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if color.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if color.get(m) is None and (c := visit(m)):
                return c
        stack.pop()
        color[n] = 2
        return None

    for n in sorted(graph):
        if color.get(n) is None and (c := visit(n)):
            return c
    return None


def test_import_graph_has_no_cycle():
    mods = modules()
    known = set(mods)
    graph = {m: {t for t in internal_imports(m, p, known)[0] if t in known} for m, p in mods.items()}
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


def test_cycle_detector_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# Modules whose functions may import sparsearch modules: the CLI's commands (start-up time) and
# the lazy encoder registry (optional extras resolved by name).
NESTED_OK = {"sparsearch.cli", "sparsearch.encoders"}


def test_internal_imports_are_at_module_top():
    mods = modules()
    known = set(mods)
    bad = sorted({f"{m}:{line} imports {t}" for m, p in mods.items() if m not in NESTED_OK
           for line, t in internal_imports(m, p, known)[1]})
    assert not bad, "imports inside functions (move them to the module top):\n" + "\n".join(bad)


# One interpreter imports the heavy third-party packages once, then forks a child per module that
# imports only that module: each sparsearch module is imported with no other sparsearch module
# loaded (what a fresh interpreter sees), at the cost of a fork instead of a start-up.
_FORK_IMPORTS = r"""
import importlib, os, sys, traceback
for heavy in ("numpy", "scipy.sparse", "numba", "torch", "transformers", "fastapi", "pydantic", "typer"):
    try:
        importlib.import_module(heavy)
    except ImportError:
        pass
failed = []
for mod in sys.argv[1:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            importlib.import_module(mod)
            code = 0
        except BaseException:
            os.write(w, traceback.format_exc()[-1500:].encode())
            code = 1
        os._exit(code)
    os.close(w)
    err = os.read(r, 4096).decode()
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if status:
        failed.append(f"import {mod}: {err}")
print("\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_on_its_own():
    r = subprocess.run([sys.executable, "-c", _FORK_IMPORTS, *sorted(modules())], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
