"""Docstring examples run, and the module paths docstrings cite exist.

Every module under ``models/``, ``streams/`` and ``deploy/`` whose source has
a ``>>>`` example is imported and its examples run (`doctest`, with
ELLIPSIS, as pytest's own doctest runner would), one test per module. Only
those modules are imported, found by reading the files: a module without
examples is never imported here, so collecting the doctests needs no torch
(none of the torch modules under ``models/training`` has an example today;
CI installs the `train` extra anyway, see ``deploy/setup.sh``, so one that
gains an example still runs there).

An example marked ``# doctest: +SKIP`` (one that needs a running broker)
is not run, and not reported as a skipped test either: it is compiled, so
its code still has to parse, and the docstring says in prose why it is not
run.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import io
import re
from pathlib import Path

import pytest

from tests.paths import ROOT

PACKAGES = ("models", "streams", "deploy")


def _modules_with_examples() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "__main__.py" or ">>> " not in path.read_text():
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            names.append(".".join(parts))
    return names


MODULES = _modules_with_examples()


def test_the_modules_with_examples_are_found() -> None:
    assert {"models.core", "models.evaluation.metrics", "streams.codec"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    assert tests, f"{name} has '>>> ' in its source but no docstring example doctest can find"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report = io.StringIO()
    ran = 0
    for test in tests:
        for example in test.examples:
            if example.options.get(doctest.SKIP):
                compile(example.source, f"<{test.name} example at line {example.lineno}>", "exec")
            else:
                ran += 1
        runner.run(test, out=report.write)
    assert runner.failures == 0, report.getvalue()
    skipped_only = all(e.options.get(doctest.SKIP) for t in tests for e in t.examples)
    assert ran > 0 or skipped_only


# A dotted path into the project quoted or backticked in a docstring:
# `models.core.step`, ``streams.cli``, "models.training.recommenders:SasrecRecommender".
_CITE = re.compile(
    r"""[`"']+[~!]?((?:models|streams|deploy)(?:\.[A-Za-z_]\w*)+(?::[A-Za-z_]\w*)?)(?:\(\))?[`"']+"""
)


def _module_file(dotted: str) -> Path | None:
    base = ROOT.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _defined(body: list[ast.stmt], name: str) -> ast.stmt | None:
    """The statement of ``body`` (a module or class body) that binds ``name``."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == name:
                return node
        elif isinstance(node, ast.Assign):
            if any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                return node
        elif isinstance(node, ast.AnnAssign):
            if isinstance(node.target, ast.Name) and node.target.id == name:
                return node
        elif isinstance(node, ast.Import | ast.ImportFrom):
            if any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                return node
        elif isinstance(node, ast.If | ast.Try):
            found = _defined(node.body, name) or _defined(node.orelse, name)
            if found is not None:
                return found
    return None


def _resolves(cite: str) -> bool:
    """Whether ``cite`` names a module of the tree, then names bound in it (read, not imported)."""
    parts = cite.replace(":", ".").split(".")
    for cut in range(len(parts), 0, -1):
        path = _module_file(".".join(parts[:cut]))
        if path is None:
            continue
        body: list[ast.stmt] = ast.parse(path.read_text()).body
        for name in parts[cut:]:
            node = _defined(body, name)
            if node is None:
                return False
            body = node.body if isinstance(node, ast.ClassDef) else []
        return True
    return False


def _citations() -> list[tuple[str, str]]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if not isinstance(
                    node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
                ):
                    continue
                for match in _CITE.finditer(ast.get_docstring(node) or ""):
                    found.append((str(path.relative_to(ROOT)), match.group(1)))
    return found


def test_cited_module_paths_exist() -> None:
    citations = _citations()
    assert len(citations) > 20, "the scan found too few citations to mean anything"
    stale = [f"{where}: {cite}" for where, cite in citations if not _resolves(cite)]
    assert not stale, "docstrings cite paths that do not exist:\n" + "\n".join(stale)


def test_a_stale_citation_is_caught() -> None:
    assert _resolves("models.evaluation.harness.run_eval")
    assert _resolves("models.training.recommenders:SasrecRecommender")
    assert _resolves("models.core.Delta.version")  # a field of a dataclass
    assert not _resolves("models.learned.sasrec:SASRecRecommender")  # the one this was for
    assert not _resolves("models.core.replay")
