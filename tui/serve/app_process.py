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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from textual_serve.app_service import AppService

# Each step of the escalation (quit, SIGTERM, after SIGKILL) waits this long for the app to go:
# with the server's own steps they stay well inside the 10 s a SIGTERM to `morgue serve` may take.
STEP_SECONDS = 2.0


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
        if self._stopping is not None:  # the server began stopping while this tab opened
            raise ConnectionError("the server is stopping")
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
                await self._end(process)
            if process is not None:  # anything the app left in its group holds its pipes
                self._signal_group(process.pid, signal.SIGKILL)
            if self._task is not None:
                await self._within_a_step(self._task)
                self._task = None
            with contextlib.suppress(Exception):
                await self.remote_close()
        finally:
            # Again when this stop is cancelled part way (the server's loop ending): no group
            # outlives its tab.
            if process is not None:
                self._signal_group(process.pid, signal.SIGKILL)
            self._on_exit(self)

    async def _end(self, process: asyncio.subprocess.Process) -> None:
        """Quit, else SIGTERM, else SIGKILL: one step each."""
        if await self._within_a_step(self._quit(process)):
            return
        self._signal_group(process.pid, signal.SIGTERM)
        if await self._within_a_step(process.wait()):
            return
        self._signal_group(process.pid, signal.SIGKILL)
        await self._within_a_step(process.wait())

    async def _quit(self, process: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(Exception):  # its stdin may be gone already
            await self.send_meta({"type": "quit"})
        await process.wait()

    @staticmethod
    async def _within_a_step(step: Awaitable[object]) -> bool:
        """Whether ``step`` ended (in any way) within STEP_SECONDS."""
        try:
            await asyncio.wait_for(step, STEP_SECONDS)
        except TimeoutError:
            return False
        except Exception:  # the app's own reader ending on an error is an end too
            return True
        return True

    @staticmethod
    def _signal_group(pgid: int, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signum)
