"""The headless `morgue` command line; also `celery -A proj morgue` via ``celery_morgue``.

Importing this package must stay cheap and free of textual: `celery` loads it as a plugin for
every command it runs, workers included.
"""

from celery_morgue.tui.cli.groups import celery_morgue, cli, main

__all__ = ["celery_morgue", "cli", "main"]
