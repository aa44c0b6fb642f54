"""The layout's own rules (docs/architecture.md: the map): no import cycle in the workflow package or the job code,
no function longer than a screen, no two files of one name doing different things."""

import ast
from collections import Counter
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "workflow" / "dogbreed"
MAX_FUNCTION_LINES = 80


def python_files(*folders):
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    """dogbreed.tuning.spec for workflow/dogbreed/tuning/spec.py; classifier for scripts/classifier.py."""
    parts = path.relative_to(PACKAGE.parent if PACKAGE in path.parents else REPO / "scripts").with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, known: set) -> set:
    """The project's modules this file imports, at the top or inside a function, and the packages whose __init__
    runs first (importing a.b.c runs a and a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        for name in names:
            parts = name.split(".")
            found |= {".".join(parts[:depth]) for depth in range(1, len(parts) + 1)} & known
    return found


def cycles(graph: dict) -> list:
    """Every import cycle, each as the list of modules around it (depth-first search, three colours)."""
    state, stack, found = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                found.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_no_import_cycle_in_the_workflow_package_or_the_job_code():
    files = {module_name(p): p for p in python_files("workflow/dogbreed", "scripts")}
    graph = {name: imports(path, set(files)) - {name} for name, path in files.items()}
    assert graph["dogbreed.backends.base"] >= {"dogbreed.tuning.trial_jobs"}  # the checker sees function-level imports
    assert cycles(graph) == []
    # and it would see one
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_no_function_is_longer_than_a_screen():
    long = [
        f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in python_files("workflow", "scripts")
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


def test_no_two_files_share_a_name():
    """Rule scripts, the package's modules and the job code: one name, one thing (package __init__s aside)."""
    names = Counter(p.name for p in python_files("workflow", "scripts") if p.name != "__init__.py")
    assert [name for name, count in names.items() if count > 1] == []
