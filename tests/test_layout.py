"""The engine's shape (docs/architecture.md): no import circle in harness/, no module much
over 450 lines, no run-directory path spelled outside harness/rundir.py, and no plugin
imported by harness/."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "harness"
MODULES = sorted(HARNESS.rglob("*.py"))
MAX_LINES = 480  # "about 450": a module past this does more than one job


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def harness_imports(path: Path) -> set[str]:
    """Every harness module this file imports, at module level or inside functions (a
    function-level import still makes a circle; imports under TYPE_CHECKING do not)."""
    tree = ast.parse(path.read_text())
    type_only = {
        id(node)
        for top in ast.walk(tree)
        if isinstance(top, ast.If) and "TYPE_CHECKING" in ast.unparse(top.test)
        for node in ast.walk(top)
    }
    known = {module_name(p) for p in MODULES}
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in known and n.startswith("harness.")}
    return found - {"harness", module_name(path)}


def test_no_import_circle_in_harness():
    graph = {module_name(p): harness_imports(p) for p in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep) :] + [dep]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert len(graph) > 20  # the walk saw the engine


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(HARNESS)))
def test_no_module_does_several_jobs(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines: split it by concept"


# File and folder names inside a run directory: only harness/rundir.py spells them.
RUN_FILES = (
    "key.json|benchmark.json|run_info.json|transform.json|tta.json|config.yaml|run.log|"
    "epochs.parquet|rows.parquet|notes.json|eval.json|head.npz|model_scorers.json|best.pt|"
    "last.pt|DONE|FAILED|LOCK"
)
RUN_FOLDERS = "runs|posthoc|scores|risk_coverage|checkpoints|outputs|meta"
PATTERNS = [
    re.compile(rf'["\'](?:{RUN_FILES})["\']'),
    re.compile(rf'/ ["\'](?:{RUN_FOLDERS})["\']'),
    re.compile(rf'os\.path\.join\([^)]*["\'](?:{RUN_FOLDERS})["\']'),
    re.compile(r'["\'][^"\']*-\{[^}]*\[:16\]\}\.npz["\']'),  # the cache file name
]


def test_run_directory_paths_are_spelled_only_by_their_owner():
    offenders = []
    others = [*(ROOT / "methods").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    for path in [*MODULES, *sorted(others)]:
        if path == HARNESS / "rundir.py":
            continue
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if any(p.search(line) for p in PATTERNS):
                offenders.append(f"{path.relative_to(ROOT)}:{no}: {line.strip()}")
    assert not offenders, "run-directory paths outside harness/rundir.py:\n" + "\n".join(offenders)
    assert any(p.search('rd / "key.json"') for p in PATTERNS)  # the patterns can match


def test_harness_imports_no_plugin():
    for path in MODULES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                top = node.module.split(".")[0]
            elif isinstance(node, ast.Import):
                top = node.names[0].name.split(".")[0]
            else:
                continue
            assert top not in ("methods", "shiftbench_datasets", "datasets"), (
                f"{path.relative_to(ROOT)} imports the plugin package {node.module or top}"
            )
