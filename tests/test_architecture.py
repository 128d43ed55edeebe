"""The package's shape: which module may import which."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "vaedetect"


def _imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports anywhere (in functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module.split(".")[0]} if node.module else {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vaedetect."):
            found.add(node.module.split(".")[1])
    return {name for name in found if (PACKAGE / f"{name}.py").is_file()} - {path.stem}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, or None."""
    state: dict[str, str] = {}

    def visit(module, trail):
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                return trail[trail.index(imported):] + [imported]
            if imported not in state and (found := visit(imported, trail + [imported])):
                return found
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module, [module])):
            return found
    return None


def test_no_module_imports_another_in_a_circle():
    graph = {path.stem: _imports(path) for path in PACKAGE.glob("*.py")}
    assert graph["persistence"] and graph["estimator"]  # the graph was read
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_settings_and_the_score_registry_import_no_torch():
    import subprocess
    import sys

    code = "import sys, vaedetect.settings, vaedetect.registry; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
