"""The layout's rules, read from the source (docs/architecture.md "Layout"): an AST scan of every module's imports.

- `integration_core` (the product) imports neither Dagster nor the sandboxes; `pipelines` does not import the sandboxes.
- No module imports from a conftest module (shared test code lives in `tests/support/`).
- `integration_core` has no loose top-level module beyond the documented foundations.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOUNDATIONS = {"settings", "domain", "errors", "crypto", "audit", "schemas"}
SCANNED = ("integration_core", "pipelines", "sandboxes", "bench", "migrations", "tests")


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(source: str, module: str, *, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in `source` (the module `module`), at any depth
    (function-level imports included; relative imports resolved against the module's package)."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:  # `from tests import conftest` names a module too
                yield node.lineno, f"{base}.{alias.name}"


def file_imports(path: Path) -> Iterator[tuple[int, str]]:
    return imports(path.read_text(), _module_name(path), is_package=path.name == "__init__.py")


def _offenders(packages: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for package in packages:
        for path in _modules(package):
            for line, name in file_imports(path):
                top = name.split(".")[0]
                if any(top == f or top.startswith(f + "_") for f in forbidden):
                    found.append(f"{path.relative_to(ROOT)}:{line}: imports {name}")
    return sorted(set(found))


def test_the_product_imports_neither_dagster_nor_the_sandboxes() -> None:
    assert _offenders(("integration_core",), ("dagster", "sandboxes")) == []


def test_the_pipelines_do_not_import_the_sandboxes() -> None:
    assert _offenders(("pipelines",), ("sandboxes",)) == []


def test_no_module_imports_from_a_conftest_module() -> None:
    found = []
    for package in SCANNED:
        for path in _modules(package):
            for line, name in file_imports(path):
                if "conftest" in name.split("."):
                    found.append(f"{path.relative_to(ROOT)}:{line}: imports {name}")
    assert sorted(set(found)) == [], "shared test code belongs in tests/support/"


def test_integration_core_has_no_loose_modules_beyond_the_foundations() -> None:
    loose = {p.stem for p in (ROOT / "integration_core").glob("*.py")} - {"__init__"}
    assert loose - FOUNDATIONS == set(), "put it in the package of its role (docs/architecture.md, Layout)"


# -- the scan itself sees what it must ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import dagster\n", "dagster"),
        ("import dagster_postgres as dp\n", "dagster_postgres"),
        ("def f():\n    from sandboxes.servicetitan import serve\n", "sandboxes.servicetitan"),
        ("from tests import conftest\n", "tests.conftest"),
        ("from .conftest import World\n", "tests.operator.conftest"),
        ("from ..conftest import SHARED\n", "tests.conftest"),
    ],
)
def test_the_scan_finds_every_form_of_import(source: str, expected: str) -> None:
    assert expected in [name for _, name in imports(source, "tests.operator.example_module")]
