"""Command-line conventions: a version, and a group's help when its command is missing."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.helpers import Morgue, child_env


def test_the_console_script_prints_its_version(tmp_path: Path) -> None:
    # The installed `morgue` script itself, next to this interpreter, as a user runs it.
    script = Path(sys.executable).parent / "morgue"
    result = subprocess.run(
        [str(script), "--version"],
        env=child_env(tmp_path / "config.toml"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"morgue, version {version('celery-morgue')}"


@pytest.mark.parametrize("group", ["dlq", "profiles"])
def test_a_group_without_its_command_shows_its_help_on_stdout(morgue: Morgue, group: str) -> None:
    result = morgue(group)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == f"Usage: morgue {group} [OPTIONS] COMMAND [ARGS]..."
    assert "Commands:" in lines
    assert len(lines) > 6, "the help is laid out, not squashed onto one line"


def test_usage_errors_stay_one_line(morgue: Morgue) -> None:
    result = morgue("dlq", "lis")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Did you mean 'list'?" in result.stderr
