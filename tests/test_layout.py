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


# The pipeline, bottom to top (STYLE.md): a module may import only from its own subpackage or a lower one.
STAGES = {
    "induction.common": 0,
    "induction.loading": 1,
    "induction.inputs": 2,
    "induction.heads": 3,
    "induction.measures": 4,
    "induction.training": 4,
    "induction.bench": 5,
    "induction.plots": 5.5,
    "induction.reports": 6,
    "induction.jobs": 7,
    "induction.cli": 8,
}
MAX_LINES = 450


def stage(module: str) -> str | None:
    return next((s for s in STAGES if module == s or module.startswith(s + ".")), None)


def test_every_module_sits_in_a_stage():
    graph = import_graph()
    loose = {m for m in graph if m.startswith("induction.") and stage(m) is None and m != "induction._compat"}
    assert not loose, f"modules outside the pipeline's subpackages: {sorted(loose)}"


def test_imports_flow_down_the_pipeline():
    graph = import_graph()
    upward = sorted(f"{m} -> {e}" for m, edges in graph.items() if stage(m) for e in edges
                    if stage(e) and stage(e) != stage(m) and STAGES[stage(e)] >= STAGES[stage(m)])
    assert not upward, "imports against the pipeline: " + "; ".join(upward)


def test_upper_layers_are_imported_only_from_above():
    graph = import_graph()
    # The CLI is imported by nothing but itself; the demo only by the CLI.
    assert importers(graph, "induction.cli") <= {m for m in graph if m.startswith("induction.cli")}
    assert importers(graph, "induction.jobs.demo") <= {"induction.cli.demo"}
    # Figures read reports' contents; no compute module imports figures, reports or jobs.
    above = {m for m in graph if m.startswith(("induction.cli", "induction.jobs", "induction.reports", "induction.plots"))}
    assert importers(graph, "induction.plots") <= above
    assert importers(graph, "induction.reports") <= above
    assert importers(graph, "induction.jobs") <= above


def test_no_module_is_longer_than_the_limit():
    long = {str(p.relative_to(ROOT)): n for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_graph_sees_function_level_imports():
    """The check is only as good as its parser: a lazy import inside a function counts."""
    graph = import_graph()
    assert "induction.jobs.scan" in graph["induction.cli.scan"]  # imported inside `run`


def test_library_messages_name_config_fields_not_flags():
    """Only `induction/cli` knows flag names: a string in library code (docstrings aside) that names
    one of the CLI's own flags would tell a notebook user about an option they never typed. Reports'
    summaries and suggested shell commands of other tools are the exceptions listed here."""
    import re

    from induction.cli import build_parser

    flags = {opt for action in _all_actions(build_parser()) for opt in action.option_strings if opt.startswith("--")}
    allowed = {"induction/reports", "induction/loading/hub.py", "induction/inputs/tasks.py"}  # summaries; `hf download` hints
    found = []
    for path in (ROOT / "induction").rglob("*.py"):
        rel = str(path.relative_to(ROOT))
        if rel.startswith("induction/cli") or any(rel.startswith(a) for a in allowed):
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                found += [f"{rel}:{node.lineno} {m}" for m in re.findall(r"(?<![\w-])--[a-z][a-z-]*", node.value)
                          if m in flags]
    assert not found, "library strings that name CLI flags: " + "; ".join(found)


def _all_actions(parser):
    import argparse

    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_actions(sub)
