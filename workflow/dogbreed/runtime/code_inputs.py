"""Which code each rule and each job depends on, derived from the imports (docs/architecture.md §1), so that
editing a module reruns exactly the rules whose results it can change.

A rule's code inputs are the workflow modules its script imports, transitively, package __init__ files
included, and the job-contract module it shares with the job code (scripts/job_contract.py). Two things are
left out: the other backends (dogbreed/backends/registry.py imports each one only when it is configured), and
the modules that only supervise a rule (SUPERVISION: output to log and terminal, signals, stale locks, how its
process ends), which every rule script imports through run_rule. A job's code (what it runs in its container) is its entry point's
imports among scripts/, and requirements.txt, which the container installs.
"""

import ast
import functools
from pathlib import Path

WORKFLOW = Path(__file__).resolve().parents[2]  # workflow/: the dogbreed package, the rule scripts
JOB_CODE = WORKFLOW.parent / "scripts"  # the jobs' source_dir
RULE_SCRIPTS = WORKFLOW / "scripts"
BACKENDS = {
    "local": "dogbreed.backends.local",
    "local_container": "dogbreed.backends.local_container",
    "sagemaker": "dogbreed.backends.sagemaker",
}
BACKEND_REGISTRY = WORKFLOW / "dogbreed" / "backends" / "registry.py"
SUPERVISION = ("dogbreed.runtime.rule_runner", "dogbreed.runtime.run_guard", "dogbreed.runtime.script_end")


@functools.cache  # every rule's closure reads the same files: each is parsed once a run
def imported(path: Path) -> list:
    """Every module name an import in this file may load (at the top or inside a function)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)  # `from a.b import c`: a.b, and a.b.c when c is a module
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def module_file(name: str):
    """The file of a module of this project (the dogbreed package, or a module of the job code), else None."""
    parts = name.split(".")
    if parts[0] == "dogbreed":
        base = WORKFLOW.joinpath(*parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None
    candidate = JOB_CODE / f"{name}.py"
    return candidate if len(parts) == 1 and candidate.is_file() else None


def closure(start: Path, backend=None) -> set:
    """The project's files that `start` imports, transitively (start itself not included). backend: follow only
    the configured backend's import in the backends registry."""
    found, todo = set(), [Path(start)]
    while todo:
        path = todo.pop()
        for name in imported(path):
            if supervisor := next((s for s in SUPERVISION if name == s or name.startswith(s + ".")), None):
                name = supervisor.rpartition(".")[0]  # (its package's __init__ still runs)
            if (
                path == BACKEND_REGISTRY
                and backend is not None
                and any(
                    name == other or name.startswith(other + ".")
                    for other in BACKENDS.values()
                    if other != BACKENDS[backend]
                )
            ):
                continue
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # a package's __init__ runs before its modules
                file = module_file(".".join(parts[:depth]))
                if file is not None and file not in found and file != Path(start):
                    found.add(file)
                    todo.append(file)
    return found


def rule_code(script: str, backend: str) -> list:
    """A rule script's code inputs (workflow/scripts/<script>.py): what it imports, transitively."""
    return sorted(str(p) for p in closure(RULE_SCRIPTS / f"{script}.py", backend))


def job_code(entry_point: str, requirements=True) -> list:
    """A job's code: its entry point in scripts/ and what it imports from there, and requirements.txt."""
    start = JOB_CODE / entry_point
    files = {start, *(p for p in closure(start) if p.parent == JOB_CODE)}
    if requirements:
        files.add(JOB_CODE / "requirements.txt")
    return sorted(str(p) for p in files)
