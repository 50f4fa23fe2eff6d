"""Command-line conventions: a version, and a group's help when its command is missing."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest

from tests.test_cli import Morgue


@pytest.fixture
def morgue(tmp_path: Path) -> Morgue:
    return Morgue(tmp_path / "config.toml")


def test_version(morgue: Morgue) -> None:
    result = morgue("--version")
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
