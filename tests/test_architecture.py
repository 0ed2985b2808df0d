"""The shape of the packages: no import cycles, and the math imports no transport.

Checked on the source with `ast`, without importing anything, by these rules:

- An import is every ``import`` / ``from ... import`` statement in a module,
  inside functions too: a lazy import still ties the two modules together,
  and both cycles this test was written against went through one
  (``models.encoder.export`` <-> ``models.encoder.torch_encoder``, and
  ``models.evaluation.harness`` <-> ``models.training.registry`` at the end
  of the harness). Imports under ``if TYPE_CHECKING:`` do not count: they
  never run, they only name types.
- ``from package import name`` depends on ``package.name`` when that is a
  module of the tree, else on ``package``; relative imports are resolved.
- Importing ``a.b.c`` does not count as importing ``a`` and ``a.b`` too: a
  package's ``__init__`` re-exporting its own submodules (``models.encoder``,
  ``streams.cli``) would otherwise be a cycle with each of them.
- No cycle among the modules of ``models/`` and ``streams/``.
- ``models/`` imports nothing from ``streams/`` or ``deploy/`` (the math has
  no Kafka); ``streams/`` imports nothing from ``deploy/`` (the wheel ships
  ``models`` and ``streams`` only; ``deploy/`` may use them).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.paths import ROOT

PACKAGES = ("models", "streams")
Edges = dict[str, dict[str, int]]  # module -> imported module -> line of the first import


def module_names(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted name -> file of every module under ``root/<package>``."""
    names = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            names[".".join(parts)] = path
    return names


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _statements(node: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    for child in ast.iter_child_nodes(node):
        if _type_checking_only(child):
            for other in child.orelse:  # type: ignore[attr-defined]
                yield from _statements_of(other)
            continue
        yield from _statements_of(child)


def _statements_of(node: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    yield from _statements(node)


def imports_of(name: str, path: Path, known: Iterable[str]) -> dict[str, int]:
    """The modules of ``known`` that module ``name`` (at ``path``) imports, with a line each."""
    known = set(known)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: dict[str, int] = {}
    for stmt in _statements(ast.parse(path.read_text(), str(path))):
        if isinstance(stmt, ast.Import):
            targets = [alias.name for alias in stmt.names]
        else:
            if stmt.level:
                base = package[: len(package) - (stmt.level - 1)]
                module = ".".join([*base, *([stmt.module] if stmt.module else [])])
            else:
                module = stmt.module or ""
            targets = [
                f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                for alias in stmt.names
            ]
        for target in targets:
            while target and target not in known:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.setdefault(target, stmt.lineno)
    return found


def import_graph(root: Path, packages: Iterable[str], known: Iterable[str] = ()) -> Edges:
    """Edges between the modules of ``packages`` (and into ``known`` other modules)."""
    modules = module_names(root, packages)
    universe = set(modules) | set(known)
    return {name: imports_of(name, path, universe) for name, path in modules.items()}


def cycles(graph: Edges) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, {}):
            if succ not in graph:
                continue
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _explain(graph: Edges, component: list[str]) -> str:
    inside = set(component)
    return "\n".join(
        f"  {a} -> {b} (line {line})"
        for a in component
        for b, line in sorted(graph[a].items())
        if b in inside
    )


def test_no_import_cycles_in_models_and_streams() -> None:
    graph = import_graph(ROOT, PACKAGES)
    assert len(graph) > 50, "the scan found too few modules to mean anything"
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n\n".join(_explain(graph, c) for c in found)


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("models", ("streams", "deploy")), ("streams", ("deploy",))],
    ids=["models-imports-no-streams-or-deploy", "streams-imports-no-deploy"],
)
def test_layers(package: str, forbidden: tuple[str, ...]) -> None:
    others = module_names(ROOT, forbidden)
    graph = import_graph(ROOT, [package], known=others)
    wrong = [
        f"{module} imports {target} (line {line})"
        for module, targets in sorted(graph.items())
        for target, line in sorted(targets.items())
        if target.split(".")[0] in forbidden
    ]
    assert not wrong, "\n".join(wrong)


def test_the_scan_sees_lazy_imports_and_skips_type_only_ones(tmp_path: Path) -> None:
    """The rules above, on a made-up tree: so a green run is not a blind scan."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .a import A\nfrom . import b\n")
    (pkg / "a.py").write_text("class A:\n    def run(self):\n        from pkg.b import B\n")
    (pkg / "b.py").write_text("from pkg import a\nB = a\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.d import D\n"
    )
    (pkg / "d.py").write_text("import pkg.c\n")
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg"] == {"pkg.a": 1, "pkg.b": 2}
    assert graph["pkg.a"] == {"pkg.b": 3}  # a function-level import counts
    assert graph["pkg.b"] == {"pkg.a": 1}  # `from pkg import a` is the module pkg.a
    assert graph["pkg.c"] == {}  # a TYPE_CHECKING import does not
    assert cycles(graph) == [["pkg.a", "pkg.b"]]
