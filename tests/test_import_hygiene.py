"""Workers import core: it must not drag in textual or rich, directly or through anything.

Each module is imported alone, in a fresh process: one interpreter loads what every module
needs anyway (celery, kombu, redis, click: none of them loads textual or rich), then forks a
child per module, which imports just that module and reports what it loaded. The same answer
as an interpreter per module, at a fraction of the start-up cost.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

from celery_morgue import core
from tests.helpers import REPO

# core/package_root is the source of celery_morgue/__init__.py, not a module of core.
CORE_SUBMODULES = sorted(
    f"celery_morgue.core.{info.name}"
    for info in pkgutil.iter_modules(core.__path__)
    if info.name != "package_root"
)
CORE_MODULES = ["celery_morgue", "celery_morgue.core", *CORE_SUBMODULES]

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

PROBE = """
import json, os, sys

forbidden, modules = set(sys.argv[1].split(",")), sys.argv[2:]
import celery, celery.app.base, click, kombu, redis  # shared by all, and free of both
preloaded = sorted({name.split(".")[0] for name in sys.modules} & forbidden)
report = {}
for module in modules:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            __import__(module)
            answer = sorted({name.split(".")[0] for name in sys.modules} & forbidden)
        except BaseException as exc:
            answer = f"import failed: {exc!r}"
        with os.fdopen(write, "w") as pipe:
            pipe.write(json.dumps(answer))
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        report[module] = json.loads(pipe.read() or '"no answer"')
    os.waitpid(pid, 0)
print(json.dumps({"preloaded": preloaded, "modules": report}))
"""


def loaded_by(modules: list[str], forbidden: tuple[str, ...]) -> dict[str, object]:
    """For each module, the ``forbidden`` packages that importing it alone loads."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(forbidden), *modules],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["preloaded"] == [], "the probe's own imports load them: it would see nothing"
    report = answer["modules"]
    assert isinstance(report, dict) and sorted(report) == sorted(modules)
    return report


def test_core_has_the_modules_this_test_expects() -> None:
    assert {
        "celery_morgue.core.dlq",
        "celery_morgue.core.capture",
        "celery_morgue.core.install",
    } <= set(CORE_MODULES)


def test_importing_any_core_module_loads_no_ui_library() -> None:
    report = loaded_by(CORE_MODULES, ("textual", "rich"))
    assert {module: found for module, found in report.items() if found != []} == {}


def test_the_command_line_loads_no_textual() -> None:
    report = loaded_by(CLI_MODULES, ("textual",))
    assert {module: found for module, found in report.items() if found != []} == {}


def test_the_probe_sees_a_module_that_loads_one() -> None:
    # The UI itself loads textual: a probe that answered [] here could not fail the others.
    report = loaded_by(["celery_morgue.tui.app", "celery_morgue.tui.profiles"], ("textual",))
    assert report == {"celery_morgue.tui.app": ["textual"], "celery_morgue.tui.profiles": []}
