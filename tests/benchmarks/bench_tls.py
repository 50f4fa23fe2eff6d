"""TLS benchmark: capturing a failure into a rediss:// DLQ against the same capture over plain TCP.

Run: python tests/benchmarks/bench_tls.py [--captures 2000] [--rounds 7]

One redis-server (Debian's, built with TLS) listens on a plain port and a TLS port at once, so
the only difference between the two sides is TLS; both run in the same process, interleaved in
rounds, and the figure is the ratio of the medians. The TLS client keeps its connection, as a
worker's does, so the handshake is paid once per pool child, not per failure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from celery import Celery

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_dlq import failure, per_call

from celery_morgue.core.capture import FailureCapture
from celery_morgue.core.options import Options
from tests.helpers import TLSRedisServer, make_certificates, tls_redis_binary


def capture_cost(url: str, captures: int, rounds: int, spool: str) -> list[float]:
    app = Celery("bench", broker=url)

    @app.task(name="shop.charge_card")
    def charge_card(order_id: int, amount: str) -> None: ...

    capture = FailureCapture(app, url, Options(spool_dir=spool, max_entries=10**9))
    exc, einfo = failure()
    charge_card.push_request(
        hostname="w1@bench",
        retries=3,
        delivery_info={"exchange": "", "routing_key": "payments", "priority": 0},
    )
    request = charge_card.request

    def captured(n: int) -> None:
        request.id = f"cap-{url[:6]}-{n}"
        capture.on_task_failure(
            sender=charge_card,
            task_id=request.id,
            exception=exc,
            args=(42, "19.99"),
            kwargs={"currency": "EUR"},
            traceback=einfo.tb,
            einfo=einfo,
        )

    captured(-1)  # connect (and, over TLS, shake hands) before timing
    return [per_call(captured, captures, r * captures) for r in range(rounds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--captures", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=7)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        binary = tls_redis_binary(root)
        server = TLSRedisServer(binary, make_certificates(root / "pki"), plain_port=True)
        server.start()
        try:
            plain_url = f"redis://127.0.0.1:{server.plain_port}/0"
            tls_times: list[float] = []
            plain_times: list[float] = []
            for _ in range(options.rounds):  # interleaved: a noisy spell hits both sides
                plain_times += capture_cost(plain_url, options.captures, 1, str(root / "s1"))
                tls_times += capture_cost(server.url(), options.captures, 1, str(root / "s2"))
        finally:
            server.stop()
    tls, plain = statistics.median(tls_times), statistics.median(plain_times)
    print(f"capture over rediss://: {tls * 1e6:8.1f} µs")
    print(f"capture over redis://:  {plain * 1e6:8.1f} µs   (same server, same run)")
    print(f"ratio TLS / plain:      {tls / plain:8.2f}x")


if __name__ == "__main__":
    main()
