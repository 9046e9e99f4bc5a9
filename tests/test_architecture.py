"""The layout rules of docs/ARCHITECTURE.md, checked on the source: one-way imports, no circle, small parts."""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENGINE = ROOT / "dkl4dstem"
PLUGIN = ROOT / "nionswift_plugin"
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 200
MAX_FUNCTION_LINES = 80
SUBPACKAGES = {"data", "instruments", "scalarizers", "models", "posterior", "acquisition", "experiment",
               "evaluation", "reports", "cli", "session"}


def engine_modules() -> list[pathlib.Path]:
    return sorted(p for p in ENGINE.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: pathlib.Path) -> set[str]:
    """Every dkl4dstem module `path` imports, at module level or inside functions (both can close a circle)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    known = {module_name(p) for p in engine_modules()}
    return {name for name in found if name in known}


def test_the_engine_never_imports_swift_or_the_plugin() -> None:
    offenders = []
    for path in engine_modules():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names
                          if n.split(".")[0] in {"nion", "nionswift", "nionswift_plugin", "nionui", "nionutils"}]
    assert offenders == []


def test_the_engine_is_in_concept_subpackages() -> None:
    top_level = {p.stem for p in ENGINE.glob("*.py")} - {"__init__", "__main__"}
    assert top_level <= {"config", "errors", "runtime", "exports"}, f"flat modules left at the top: {sorted(top_level)}"
    assert SUBPACKAGES <= {p.name for p in ENGINE.iterdir() if (p / "__init__.py").exists()}


def test_no_import_circle_in_the_engine() -> None:
    graph = {module_name(p): imported_modules(p) for p in engine_modules()}
    # A package __init__ that re-exports lazily (PEP 562 __getattr__) imports nothing; one that imports its own
    # children is not a circle worth reporting: drop package -> child edges.
    for name, targets in graph.items():
        graph[name] = {t for t in targets if not t.startswith(name + ".") and t != name}
    circles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                circles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert circles == [], "import circles: " + "; ".join(" -> ".join(c) for c in circles)


@pytest.mark.parametrize("root", [ENGINE, PLUGIN], ids=["engine", "plugin"])
def test_modules_classes_and_functions_stay_small(root: pathlib.Path) -> None:
    too_big = []
    for path in sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts):
        source = path.read_text()
        where = path.relative_to(ROOT)
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_big.append(f"{where}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source, str(path))):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > limit:
                    too_big.append(f"{where}:{node.lineno} {node.name}: {length} lines (limit {limit})")
    assert too_big == []
