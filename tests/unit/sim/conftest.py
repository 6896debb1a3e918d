"""Local Polygon and Tradier sims on free 127.0.0.1 ports, one per test (in-thread; no network).

The real clients (services.ingest.polygon_*, services.oms.brokers.tradier) talk to them over TCP.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.core.events import Bar
from services.ingest.sources import open_bars
from services.sim import SimServer
from services.sim.polygon import PolygonSim, PolygonSimConfig
from services.sim.tradier import TradierSim
from tests.harness.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "data" / "sample" / "spy_1min_2025-07-09.csv"
POLYGON_KEY = "pk-SENTINEL-7f3a9c0e41d2"
TRADIER_TOKEN = "tt-SENTINEL-5b8e2d6f90ac"
ACCOUNT = "VA12345678"


@pytest.fixture(scope="session")
def sample_bars() -> list[Bar]:
    return list(open_bars(SAMPLE, "SPY"))


def start_polygon(**overrides: object) -> tuple[SimServer, PolygonSim]:
    config = PolygonSimConfig(data=SAMPLE, symbol="SPY", api_key=POLYGON_KEY, **overrides)  # type: ignore[arg-type]
    sim = PolygonSim.from_config(config)
    return SimServer(sim.app()).start(), sim


@pytest.fixture
def polygon() -> Iterator[tuple[SimServer, PolygonSim]]:
    server, sim = start_polygon()
    yield server, sim
    server.stop()


@pytest.fixture
def tradier() -> Iterator[tuple[SimServer, TradierSim]]:
    sim = TradierSim(TRADIER_TOKEN, ACCOUNT)
    server = SimServer(sim.app()).start()
    yield server, sim
    server.stop()


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record at DEBUG, from every library, for secret-leak checks."""
    caplog.set_level(logging.DEBUG)
    return caplog


def leaked(secret: str, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log records whose message or extra fields contain ``secret``."""
    hits = []
    for record in caplog.records:
        text = record.getMessage() + " " + " ".join(repr(v) for v in record.__dict__.values())
        if secret in text:
            hits.append(f"{record.name}: {record.getMessage()}")
    return hits


class SimProcess:
    """A sim started as ``python -m services.sim.<name>`` on a free port; stopped by :meth:`stop`."""

    def __init__(self, module: str, *args: str) -> None:
        self.port = free_port()
        # No PYTHONPATH: the repository's operator/ folder would shadow the standard library's operator.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--port", str(self.port), *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{module} exited {self.proc.returncode}: {self.stop()[-2000:]}")
            try:
                wait_for_port(self.port, timeout_s=0.5)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.stderr.read().decode() if self.proc.stderr else ""
