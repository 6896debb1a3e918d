"""A real Prometheus server (Debian package ``prometheus``) on a free 127.0.0.1 port.

It gets a temporary folder with its own ``prometheus.yml`` (one scrape job over ``targets``, scraped
every ``scrape_interval_s``, with ``labels`` added to every series) and TSDB data dir. It is ready when
``/-/ready`` answers 200; :meth:`wait_for` polls an instant query until it returns a series.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.harness.ports import free_port, wait_for_port


class PrometheusServer:
    """Start/stop a private Prometheus scraping ``targets`` (``host:port`` of /metrics endpoints)."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        labels: Mapping[str, str] | None = None,
        scrape_interval_s: float = 1.0,
        port: int | None = None,
        startup_timeout_s: float = 30.0,
    ) -> None:
        self.targets = list(targets)
        self.labels = dict(labels or {})
        self.scrape_interval_s = scrape_interval_s
        self.port = port or free_port()
        self.startup_timeout_s = startup_timeout_s
        self.dir = Path(tempfile.mkdtemp(prefix="dreambot-prometheus-"))
        self.config_path = self.dir / "prometheus.yml"
        self.log_path = self.dir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> dict[str, Any]:
        interval = f"{max(1, round(self.scrape_interval_s * 1000))}ms"
        static: dict[str, Any] = {"targets": self.targets}
        if self.labels:
            static["labels"] = self.labels
        return {
            "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
            "scrape_configs": [{"job_name": "dreambot", "static_configs": [static]}],
        }

    def start(self) -> PrometheusServer:
        exe = shutil.which("prometheus")
        if exe is None:
            raise RuntimeError("prometheus not installed: apt-get install prometheus")
        self.config_path.write_text(yaml.safe_dump(self._config()), encoding="utf-8")
        (self.dir / "data").mkdir(exist_ok=True)
        cmd = [
            exe,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        try:
            wait_for_port(self.port, self.startup_timeout_s)
            self._wait_ready(time.monotonic() + self.startup_timeout_s)
        except BaseException:
            tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            self.stop()
            raise RuntimeError(f"prometheus did not become ready on {self.url}:\n{tail}") from None
        return self

    def _wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with code {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.url}/-/ready did not answer 200 within the timeout")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The ``data.result`` of an instant query (raises on an error answer)."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            doc = json.loads(resp.read())
        if doc.get("status") != "success":
            raise RuntimeError(f"prometheus refused {promql!r}: {doc.get('error')}")
        return list(doc["data"]["result"])

    def wait_for(self, promql: str, timeout_s: float = 20.0) -> list[dict[str, Any]]:
        """Poll ``promql`` until it returns at least one series (the targets have been scraped)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result:
                return result
            time.sleep(0.2)
        raise TimeoutError(f"{promql!r} returned nothing within {timeout_s}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        """Stop and remove the folder (config and TSDB)."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
