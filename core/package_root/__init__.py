"""celery-morgue: a Redis dead-letter queue, a zombie reaper and a terminal UI for Celery.

Workers write ``from celery_morgue import core; core.install(app)``; ``celery_morgue.install``
is the same function. This file is installed as ``celery_morgue/__init__.py``: the repository
keeps ``core/`` and ``tui/`` at its top and pyproject.toml maps them to ``celery_morgue.core``
and ``celery_morgue.tui``, so a project with its own ``core`` package still reaches ours.
"""

from celery_morgue import core
from celery_morgue.core import install

__all__ = ["core", "install"]
