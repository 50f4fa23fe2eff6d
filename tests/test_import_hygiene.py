"""Workers import core: it must not drag in textual or rich, directly or through anything."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

from celery_morgue import core
from tests.helpers import REPO

# core/package_root is the source of celery_morgue/__init__.py, not a module of core.
CORE_SUBMODULES = sorted(
    f"celery_morgue.core.{info.name}"
    for info in pkgutil.iter_modules(core.__path__)
    if info.name != "package_root"
)
CORE_MODULES = ["celery_morgue", "celery_morgue.core", *CORE_SUBMODULES]
FORBIDDEN = ("textual", "rich")


def test_core_has_the_modules_this_test_expects() -> None:
    assert {
        "celery_morgue.core.dlq",
        "celery_morgue.core.capture",
        "celery_morgue.core.install",
    } <= set(CORE_MODULES)


@pytest.mark.parametrize("module", CORE_MODULES)
def test_importing_core_module_loads_no_ui_library(module: str) -> None:
    probe = (
        f"import sys, {module}\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"{module} imports {result.stdout.strip()}"


# What `celery` loads for every command (the plugin) and what scripts run: no textual, until a
# command starts the UI or the demo.
CLI_MODULES = [
    "celery_morgue.tui.cli",
    "celery_morgue.tui.cli.groups",
    "celery_morgue.tui.cli.dlq_commands",
    "celery_morgue.tui.cli.cluster_commands",
    "celery_morgue.tui.cli.profile_commands",
    "celery_morgue.tui.profiles",
    "celery_morgue.tui.config_file",
    "celery_morgue.tui.connection",
]


@pytest.mark.parametrize("module", CLI_MODULES)
def test_the_command_line_loads_no_textual(module: str) -> None:
    probe = (
        f"import sys, {module}\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] == 'textual')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"{module} imports {result.stdout.strip()}"
