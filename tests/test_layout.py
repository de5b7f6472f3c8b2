"""The package's shape (STYLE.md, "The shape we intend"): imports flow one way, with no cycle.

Every import counts, module-level, function-level and under `TYPE_CHECKING` alike: an import
hidden in a function is still an arrow in the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("induction", "circuits")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of this project it imports (anywhere in the file)."""
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import sub` imports the submodule when there is one.
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                           for a in node.names]
            edges |= {t for t in targets if t in files and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def importers(graph: dict[str, set[str]], target: str) -> set[str]:
    return {m for m, edges in graph.items() if any(e == target or e.startswith(target + ".") for e in edges)}


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()) or [])


def test_circuits_never_imports_induction():
    graph = import_graph()
    assert not {m for m in graph if m.startswith("circuits") and any(e.startswith("induction") for e in graph[m])}


def test_upper_layers_are_imported_only_from_above():
    graph = import_graph()
    # The CLI is imported by nothing but itself; the demo only by the CLI.
    assert importers(graph, "induction.cli") <= {m for m in graph if m.startswith("induction.cli")}
    assert importers(graph, "induction.demo") <= {"induction.cli.demo"}
    # Jobs build reports; figures read them: no compute module imports either (train records
    # package versions through `report.package_versions`, the one provenance helper).
    above = {"induction.report", "induction.demo"} | {m for m in graph if m.startswith(("induction.cli", "induction.jobs"))}
    assert importers(graph, "induction.plots") <= above
    assert importers(graph, "induction.report") <= above | {"induction.train"}
    assert importers(graph, "induction.jobs") <= above


def test_the_graph_sees_function_level_imports():
    """The check is only as good as its parser: a lazy import inside a function counts."""
    graph = import_graph()
    assert "induction.jobs.scan" in graph["induction.cli.scan"]  # imported inside `run`
