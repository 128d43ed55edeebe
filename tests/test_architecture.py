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


def _code_lines(path: Path):
    """(number, text) of the lines of ``path`` that are code: docstrings and comments left out."""
    import io
    import tokenize

    source = path.read_text()
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            docstrings.update(range(body[0].lineno, body[0].end_lineno + 1))
    lines = source.splitlines()
    code = {token.start[0] for token in tokenize.generate_tokens(io.StringIO(source).readline)
            if token.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)}
    return [(n, lines[n - 1]) for n in sorted(code - docstrings) if n <= len(lines)]


def test_the_kind_of_input_is_told_apart_in_the_modality_module_alone():
    """Outside vaedetect/modality.py (and the networks and settings it resolves), code asks a detector what it
    can do (its modality's capabilities, or ``hasattr``) and never compares kinds of input."""
    import re

    kind = r"""["'](?:image|tabular|features|combined)["']"""
    compared = r"\s*(?:==|!=|\bin\b)"
    branch = re.compile(rf"(?:==|!=)\s*{kind}|{kind}\s*(?:==|!=)|(?<!dtype)\.kind{compared}|\[.kind.\]{compared}|"
                        r"(?<![.\w])kind\s*(?:==|!=)|_data_kind|\bis_image\b")
    allowed = {"modality.py", "networks.py", "settings.py"}
    found = [f"{path.name}:{n}: {text.strip()}" for path in sorted(PACKAGE.glob("*.py")) if path.name not in allowed
             for n, text in _code_lines(path) if branch.search(text)]
    # data.py infers the layout (images or a table) that the modality is decided from; the model-file schema and
    # the report name the combined detector's statistic, "combined", which is a score method, not an input kind
    assert len(found) <= 5, "\n".join(found)
