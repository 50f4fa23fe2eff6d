"""rediss://: the DLQ, the worker's capture, `morgue` and the control app over TLS.

Against a real redis-server started with TLS only (``--port 0 --tls-port``), with a CA and
certificates made for the run; skipped, saying why, where no redis-server speaks TLS.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from celery_morgue.core import DeadLetterQueue
from celery_morgue.core.urls import connect
from celery_morgue.tui.connection import connect_profile
from tests.helpers import (
    Certificates,
    Morgue,
    TLSRedisServer,
    Worker,
    add_entries,
    make_certificates,
    one_error_line,
    profile_for,
    tls_redis_binary,
    wait_for,
    wait_for_entry,
)

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


@pytest.fixture(scope="module")
def tls_binary(tls_dir: Path) -> str:
    return tls_redis_binary(tls_dir)


@pytest.fixture(scope="module")
def certificates(tls_dir: Path) -> Certificates:
    return make_certificates(tls_dir / "pki")


@pytest.fixture(scope="module")
def tls_server(tls_binary: str, certificates: Certificates) -> Iterator[TLSRedisServer]:
    """TLS, client certificates optional: the server most deployments run."""
    server = TLSRedisServer(tls_binary, certificates, auth_clients="optional")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_worker(tls_server: TLSRedisServer, tls_dir: Path) -> Iterator[Worker]:
    """A prefork worker whose broker, and so its DLQ, is the TLS Redis."""
    started = Worker(tls_server.url(), tls_dir)
    started.start()
    yield started
    started.stop()


@pytest.fixture
def tls_dlq(tls_server: TLSRedisServer) -> Iterator[DeadLetterQueue]:
    client = connect(tls_server.url(), 2.0)
    yield DeadLetterQueue(client)
    client.close()


def test_connect_takes_kombus_and_redis_pys_spelling_of_ssl_cert_reqs(
    tls_server: TLSRedisServer,
) -> None:
    for spelling in ("required", "CERT_REQUIRED", "cert_required"):
        client = connect(tls_server.url(ssl_cert_reqs=spelling), 2.0)
        assert client.ping()
        client.close()


def test_mutual_tls_needs_the_client_certificate(
    tls_binary: str, certificates: Certificates, morgue: Morgue
) -> None:
    server = TLSRedisServer(tls_binary, certificates, auth_clients="yes")
    server.start()
    try:
        client = connect(server.client_url(), 2.0)
        add_entries(DeadLetterQueue(client), "celery", 1)
        client.close()
        listed = morgue.json("--url", server.client_url(), "dlq", "list", "celery")
        assert len(listed["items"]) == 1
        refused = morgue("--url", server.url(), "queues")
        assert refused.returncode != 0
        assert "cannot reach Redis at rediss://127.0.0.1" in one_error_line(refused)
    finally:
        server.stop()


def test_a_wrong_ca_is_one_line_naming_certificate_verification(
    tls_server: TLSRedisServer, tls_dir: Path, morgue: Morgue
) -> None:
    stranger = make_certificates(tls_dir / "other-ca", "some other CA")
    url = tls_server.url(ssl_ca_certs=str(stranger.ca))
    result = morgue("--url", url, "dlq", "list", "celery")
    assert result.returncode != 0
    line = one_error_line(result)
    assert "TLS certificate verification failed" in line
    assert "check ssl_ca_certs" in line
    as_json = morgue("--url", url, "queues", "--json")
    assert as_json.returncode != 0
    assert "TLS certificate verification failed" in one_error_line(as_json)


@pytest.mark.worker
@pytest.mark.slow
def test_a_worker_captures_over_tls_and_morgue_requeues_through_a_tls_broker(
    tls_worker: Worker, tls_server: TLSRedisServer, tls_dlq: DeadLetterQueue, morgue: Morgue
) -> None:
    flag = f"flag:tls-{uuid.uuid4().hex[:6]}"
    task_id = tls_worker.send("fails_until_flag", flag, queue="other")
    entry = wait_for_entry(tls_dlq, "other", task_id)

    url = tls_server.url()
    listed = morgue.json("--url", url, "dlq", "list", "other")
    assert [item["task_id"] for item in listed["items"]] == [task_id]
    queues = morgue.json("--url", url, "queues")
    assert any(row["queue"] == "other" and row["total"] == 1 for row in queues)

    tls_dlq.client.set(flag, 1)
    data = morgue.json("--url", url, "dlq", "requeue", "other", entry.id, "--yes")
    new_id = data["requeued"][entry.id]
    done = wait_for(lambda: tls_dlq.client.get(f"done:{flag}"), timeout=30)
    assert json.loads(done) == {"task_id": new_id, "requeued_from": task_id}  # type: ignore[arg-type]
    assert tls_dlq.size("other") == 0


@pytest.mark.worker
def test_the_control_app_reaches_workers_over_tls(
    tls_worker: Worker, tls_server: TLSRedisServer
) -> None:
    # No ssl_cert_reqs: kombu alone would connect without checking the certificate; the
    # control app checks it, as the DLQ's client does, and so needs ssl_ca_certs to connect.
    url = f"rediss://127.0.0.1:{tls_server.port}/0?ssl_ca_certs={tls_server.certificates.ca}"
    with connect_profile(profile_for(url)) as connection:
        replies = connection.app.control.ping(destination=[tls_worker.name], timeout=2) or []
        assert {name for reply in replies for name in reply} == {tls_worker.name}
        assert connection.client.ping()


def test_the_control_app_checks_the_certificate_when_the_url_does_not_say(
    tls_server: TLSRedisServer,
) -> None:
    url = f"rediss://127.0.0.1:{tls_server.port}/0"  # no CA given: the system's, which refuse
    with connect_profile(profile_for(url, timeout=2.0)) as connection:
        with pytest.raises(Exception, match="certificate verify failed"):
            connection.app.control.ping(timeout=0.5)
        with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
            connection.client.ping()
