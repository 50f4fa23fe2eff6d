"""The test modules stand alone: each imports what it shares from tests/helpers.py, never from
another test module or from conftest.py (which pytest loads for its fixtures, not as a module).
A test module that imports another runs that module's import-time code in every xdist worker
that loads it, and breaks when the other is renamed or split.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_modules(path: Path) -> list[str]:
    """Every module ``path`` imports, at its top or inside a function, as an absolute name."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level and node.module:  # `from .test_x import y`
                names.append(f"tests.{node.module}")
            elif node.level:  # `from . import test_x`
                names += [f"tests.{alias.name}" for alias in node.names]
            elif node.module:
                names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return names


def is_test_module(name: str) -> bool:
    parts = name.split(".")
    return (
        parts[0] == "tests"
        and len(parts) > 1
        and (parts[1].startswith("test_") or parts[1] == "conftest")
    )


def test_no_test_module_imports_another_or_conftest() -> None:
    offenders = {
        path.name: sorted({name for name in imported_modules(path) if is_test_module(name)})
        for path in sorted(TESTS.glob("test_*.py"))
    }
    offenders = {module: names for module, names in offenders.items() if names}
    assert offenders == {}, f"import these from tests.helpers instead: {offenders}"


def test_the_check_sees_every_way_of_importing(tmp_path: Path) -> None:
    module = tmp_path / "test_probe.py"
    module.write_text(
        "import tests.test_a\n"
        "from tests.test_b import x\n"
        "from tests import test_c\n"
        "from .test_d import y\n"
        "from . import conftest\n"
        "def later():\n"
        "    from tests.conftest import REPO\n"
        "from tests.helpers import wait_for\n"
    )
    found = sorted({name for name in imported_modules(module) if is_test_module(name)})
    assert found == [
        "tests.conftest",
        "tests.conftest.REPO",
        "tests.test_a",
        "tests.test_b",
        "tests.test_b.x",
        "tests.test_c",
        "tests.test_d",
    ]
