"""One browser tab's app process: started in its own session, ended by process group.

textual-serve starts the app through a shell in the server's own process group and only asks
it to quit; a hung app (or anything it started) would outlive the tab and the server. Here
the app runs without a shell in a new session, and stopping escalates from the quit message
to SIGTERM and then SIGKILL on its whole group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from textual_serve.app_service import AppService

# Each step of the escalation waits this long for the group to go; three steps stay well
# inside the 10 s a SIGTERM to `morgue serve` may take.
STEP_SECONDS = 2.5


class AppProcess(AppService):
    """A textual-serve app service whose process is ours to end."""

    def __init__(
        self,
        argv: Sequence[str],
        extra_env: Mapping[str, str],
        on_exit: Callable[[AppProcess], None],
        **options: Any,
    ) -> None:
        super().__init__(" ".join(argv), **options)
        self.argv = list(argv)
        self.extra_env = dict(extra_env)
        self._on_exit = on_exit
        self._stopping: asyncio.Future[None] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def _open_app_process(self, width: int = 80, height: int = 24) -> Any:
        environment = {**self._build_environment(width=width, height=height), **self.extra_env}
        self._process = process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=environment,
            start_new_session=True,
        )
        assert process.stdin is not None
        self._stdin = process.stdin
        return process

    async def stop(self) -> None:
        """End the app (idempotent: the tab closing and the server stopping both call it)."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop_once())
        await asyncio.shield(self._stopping)

    async def _stop_once(self) -> None:
        process = self._process
        try:
            if process is not None and process.returncode is None:
                with contextlib.suppress(Exception):
                    await self.send_meta({"type": "quit"})
                if not await self._exited(process):
                    self._signal_group(process.pid, signal.SIGTERM)
                    if not await self._exited(process):
                        self._signal_group(process.pid, signal.SIGKILL)
                        await self._exited(process)
            # Anything the app left behind in its group goes with it.
            if process is not None:
                self._signal_group(process.pid, signal.SIGKILL)
            if self._task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._task, STEP_SECONDS)
                self._task = None
            with contextlib.suppress(Exception):
                await self.remote_close()
        finally:
            self._on_exit(self)

    @staticmethod
    async def _exited(process: asyncio.subprocess.Process) -> bool:
        try:
            await asyncio.wait_for(process.wait(), STEP_SECONDS)
        except TimeoutError:
            return False
        return True

    @staticmethod
    def _signal_group(pgid: int, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signum)
