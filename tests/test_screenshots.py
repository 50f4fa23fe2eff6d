"""The README screenshots: the script writes every one, and the same bytes on every run."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "screenshots" / "make_screenshots.py"
EXPECTED = [
    "clear-confirm.svg",
    "dashboard.svg",
    "entry.svg",
    "groups.svg",
    "help.svg",
    "profiles.svg",
]
# What the script sets in os.environ (HOME only while it runs).
PINNED = ("TZ", "TEXTUAL_THEME", "TEXTUAL_ANIMATIONS", "NO_COLOR", "HOME")


@pytest.fixture
def script() -> Iterator[ModuleType]:
    """The script imported as a module; the environment it pins is put back afterwards."""
    before = {name: os.environ.get(name) for name in PINNED}
    spec = importlib.util.spec_from_file_location("make_screenshots", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Dataclasses look their module up in sys.modules while the script is being executed.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        time.tzset()


@pytest.mark.slow
def test_every_screenshot_is_written_with_the_same_bytes_each_run(
    script: ModuleType, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    # The second run is the documented command in a fresh process, with another hash seed and
    # a developer's terminal settings, which the script must override. It runs while the
    # first one runs here: on two cores, side by side.
    developer = {
        "PYTHONHASHSEED": "12345",
        "TZ": "Europe/Paris",
        "NO_COLOR": "1",
        "TEXTUAL_THEME": "nord",
    }
    command = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--out", str(second)],
        cwd=REPO,
        env={**os.environ, **developer},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        written = script.main(first)
    finally:
        _, errors = command.communicate(timeout=120)
    assert command.returncode == 0, errors

    assert sorted(path.name for path in written) == EXPECTED
    assert sorted(path.name for path in first.iterdir()) == EXPECTED
    assert sorted(path.name for path in second.iterdir()) == EXPECTED
    for name in EXPECTED:
        svg = (first / name).read_bytes()
        assert svg == (second / name).read_bytes(), f"{name} differs between two runs"
        assert svg.startswith(b"<svg"), name
        # Rich's content-derived ids are replaced by ones named after the file.
        assert re.search(rb"terminal-\d", svg) is None, name
        assert f"morgue-{name.removesuffix('.svg')}-r1".encode() in svg, name

    # Task strings are shown as typed: the markup in the message is text, not red.
    assert b"[red]unexpected[/red]" in (first / "entry.svg").read_bytes()
    assert b"ZOMBIE" in (first / "dashboard.svg").read_bytes()
    # The config file is the script's own, shown under a home folder of its own.
    assert b"~/.config/morgue/config.toml" in (first / "profiles.svg").read_bytes()
