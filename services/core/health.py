"""A stage's HTTP endpoints: ``/healthz`` (alive), ``/readyz`` (ready to work) and ``/metrics``.

A small stdlib ``http.server`` on a daemon thread; the stage's main loop is never blocked by it.
``/readyz`` calls the readiness check the service passes in (Kafka partitions assigned, Redis
reachable where the stage uses it, state rebuilt) and answers 200 ``ready`` or 503 with the reasons,
one per line. ``/metrics`` is the Prometheus text format of the stage's registry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], list[str]]
"""Returns why the stage is not ready (empty: ready)."""


class HealthServer:
    """Serves /healthz, /readyz and /metrics on ``host:port`` (port 0: a free port, see :attr:`port`)."""

    def __init__(self, registry: CollectorRegistry, readiness: ReadinessCheck, port: int = 9100,
                 host: str = "0.0.0.0") -> None:
        self.registry = registry
        self.readiness = readiness
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    self._reply(200, b"ok\n", "text/plain; charset=utf-8")
                elif path == "/readyz":
                    try:
                        reasons = server.readiness()
                    except Exception as exc:  # a failing check means not ready, never a 500
                        reasons = [f"readiness check failed: {type(exc).__name__}: {exc}"]
                    body = ("ready\n" if not reasons else "".join(f"{r}\n" for r in reasons)).encode()
                    self._reply(200 if not reasons else 503, body, "text/plain; charset=utf-8")
                elif path == "/metrics":
                    self._reply(200, generate_latest(server.registry), CONTENT_TYPE_LATEST)
                else:
                    self._reply(404, b"not found: try /healthz, /readyz or /metrics\n", "text/plain; charset=utf-8")

            def _reply(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("http %s", format % args)

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="health-http", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
