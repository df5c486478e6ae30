"""The package layout rules of issue 12: no import circles inside apt_ext (counting imports
inside functions too), and shipped code never imports test-only modules."""
from __future__ import annotations

import ast
from pathlib import Path

import apt_ext

PKG = Path(apt_ext.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """apt_ext modules that ``path`` imports anywhere in its body (top level or in functions;
    not under ``if TYPE_CHECKING``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only, never imported at run time
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from pkg import submodule` depends on the submodule; `from mod import name` on mod
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    # written by the build, importing nothing of ours: the extension and its build facts
    generated = {"apt_ext._C", "apt_ext._build_config"}
    modules = set(files) | generated
    graph = {name: _imports(path, name, modules) for name, path in files.items() if name not in generated}
    return {**graph, **{name: set() for name in generated}}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circles_in_apt_ext():
    graph = _graph()
    assert "apt_ext.fp4.format" in graph["apt_ext.fp4._ops"]  # the graph sees imports
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_shipped_code_imports_no_test_module():
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
        bad = {m for m in names if m.split(".")[0] in ("tests", "reference", "fp4_helpers", "vgpu_helpers")}
        assert not bad, f"{path.relative_to(PKG.parent)} imports test-only modules {bad}"
