"""The package's layers: serving (what captions a picture) stands on its own, never importing the pipeline
(what builds and measures models), and no two modules import each other, directly or round a circle.

Checked two ways: by importing every serving module in a fresh process (what really gets loaded), and by
reading every module's import statements with ``ast`` (which also sees imports inside functions, the
ones a fresh import does not run)."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "captioner"

PROBE = """
import importlib, json, pkgutil, sys
import captioner
import captioner.serving as serving
names = [m.name for m in pkgutil.walk_packages(serving.__path__, "captioner.serving.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "pipeline": sorted(m for m in sys.modules if m.startswith("captioner.pipeline"))}))
"""


def module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its __init__.py)."""
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: Path, modules: dict[str, Path], lazy: bool) -> set[str]:
    """The package's modules that ``name`` imports: at module level (including under ``if``/``try``), and
    with ``lazy`` also inside functions and methods. ``from X import y`` counts X, and X.y when that is a
    module. Imports of the module's own parent packages are left out: Python has always loaded them first."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if lazy:
        nodes = list(ast.walk(tree))
    else:
        nodes = [node for top in tree.body if not isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                 for node in ast.walk(top)]
        for cls in (top for top in tree.body if isinstance(top, ast.ClassDef)):  # a class body runs at import
            nodes += [node for stmt in cls.body if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef))
                      for node in ast.walk(stmt)]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [source] + [f"{source}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name and not name.startswith(t + "."))
    return found


def import_graph(lazy: bool) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (see ``imports_of``)."""
    modules = module_names()
    return {name: imports_of(name, path, modules, lazy) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan): every import cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_importing_captioner_and_every_serving_module_loads_no_pipeline_module():
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert "captioner.serving.confidence" in result["imported"] and "captioner.serving.decoders.portable" in \
        result["imported"]  # the walk reached the modules (and subpackages) it is meant to
    assert len(result["imported"]) == sum(1 for n in module_names() if n.startswith("captioner.serving."))
    assert result["pipeline"] == []


def test_no_serving_module_imports_the_pipeline_even_inside_a_function():
    graph = import_graph(lazy=True)
    arrows = sorted((a, b) for a, targets in graph.items() if a.startswith("captioner.serving")
                    for b in targets if b.startswith("captioner.pipeline"))
    assert arrows == []


def test_no_import_cycles_at_module_level():
    """Module-level imports (what ``import X`` runs): no circle, so any module imports in any order."""
    assert cycles(import_graph(lazy=False)) == []


def test_no_import_cycles_even_counting_imports_inside_functions():
    """Imports inside functions too: a circle there still means two modules that each need the other."""
    assert cycles(import_graph(lazy=True)) == []


def test_the_checks_see_imports_and_cycles():
    """The graph and the cycle finder on known facts, so the tests above cannot pass by seeing nothing."""
    graph = import_graph(lazy=True)
    assert "captioner.serving.model_folder" in graph["captioner.serving.captioner"]  # lazy, in Captioner.load
    assert "captioner.serving.model_folder" not in import_graph(lazy=False)["captioner.serving.captioner"]
    assert "captioner.serving.cider" in graph["captioner.pipeline.scst"]
    assert "captioner.serving.sentence" in graph["captioner.serving.captioner"]  # `from . import sentence`
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
