"""The live Polygon feed end to end: the real websocket and REST clients against the Polygon sim
(``python -m services.sim.polygon``, its own process on 127.0.0.1) streaming a recorded day, through
the embedded session; the capture it writes replays to the same intents, orders and trades."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import pytest

from services.app.stages import build_feed, build_live_feed
from services.backtest.embedded import EmbeddedSession, SessionRecord
from services.core import topics
from services.core.events import Bar
from services.core.session_config import SessionConfig, load_session_config
from services.core.stage import Output
from services.ingest.polygon_live import PolygonLiveFeed
from services.ingest.sources import open_bars
from tests.unit.sim.conftest import ROOT, SAMPLE, SimProcess

pytestmark = pytest.mark.integration

KEY = "pk-SENTINEL-live-3c71e0"
WINDOW = ("09:20", "11:10")  # New York; the sample day's first playbook signals fall in here


@pytest.fixture(scope="module")
def day_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slice of the recorded day (the sim plays it at 600x: a minute bar every 0.1 s)."""
    lines = SAMPLE.read_text().splitlines()
    keep = [lines[0]] + [ln for ln in lines[1:] if WINDOW[0] <= ln[11:16] < WINDOW[1]]
    path = tmp_path_factory.mktemp("day") / "spy_window.csv"
    path.write_text("\n".join(keep) + "\n")
    return path


@pytest.fixture
def sim(day_file: Path) -> Iterator[SimProcess]:
    # --asof: the sim's clock starts at the window's start (and follows the stream), so its chain
    # snapshots are as of the minute being streamed, as a live venue's are.
    proc = SimProcess("services.sim.polygon", "--data", str(day_file), "--symbol", "SPY", "--api-key", KEY,
                      "--speed", "600x", "--asof", f"2025-07-09T{WINDOW[0]}:00-04:00")
    yield proc
    proc.stop()


def session_config(sim: SimProcess, capture: Path, **env: str) -> SessionConfig:
    environ = {"DREAMBOT_MARKET_DATA": "polygon", "POLYGON_API_KEY": KEY, "POLYGON_BASE_URL": sim.url,
               "POLYGON_WS_URL": sim.url.replace("http://", "ws://"), "POLYGON_SNAPSHOT_PATH": str(capture),
               "POLYGON_BACKOFF_S": "0.05", "DREAMBOT_CALIBRATION": "none", **env}
    return load_session_config(environ=environ, use_env_file=False).config


def replay_config(capture: Path) -> SessionConfig:
    return load_session_config(environ={"DREAMBOT_MARKET_DATA": "capture", "DREAMBOT_REPLAY_SOURCE": str(capture),
                                        "DREAMBOT_CALIBRATION": "none"}, use_env_file=False).config


def recorded(feed: Iterable[Output], sink: list[Output]) -> Iterator[Output]:
    for out in feed:
        sink.append(out)
        yield out


def run_live(config: SessionConfig, on_bar: object = None) -> tuple[SessionRecord, list[Output], PolygonLiveFeed]:
    session = EmbeddedSession(config)
    feed = build_live_feed(config, session.state, session.calendar, duration_s=120, idle_exit_s=2.0)
    outs: list[Output] = []

    def step(rec: SessionRecord) -> None:
        if callable(on_bar):
            on_bar(rec)

    record = session.run(recorded(feed, outs), on_step=step)
    return record, outs, feed


def run_replay(capture: Path) -> tuple[SessionRecord, list[Output]]:
    config = replay_config(capture)
    session = EmbeddedSession(config)
    outs: list[Output] = []
    record = session.run(recorded(build_feed(config, session.state, session.calendar), outs))
    return record, outs


def ohlcv(bars: Iterable[Bar]) -> list[tuple[object, ...]]:
    return [(b.ts, b.open, b.high, b.low, b.close, b.volume, b.interval_s) for b in bars]


def bars_of(outs: list[Output]) -> list[Bar]:
    return [o.event for o in outs if o.topic == topics.MD_BARS and isinstance(o.event, Bar)]


def test_live_session_streams_the_day_and_its_capture_replays_to_the_same_orders(
        sim: SimProcess, day_file: Path, tmp_path: Path) -> None:
    capture = tmp_path / "capture" / "live.jsonl"
    record, outs, feed = run_live(session_config(sim, capture))
    want = list(open_bars(day_file, "SPY"))
    # every minute of the file, as the file has it, nothing twice
    assert ohlcv(bars_of(outs)) == ohlcv(want)
    stats = feed.assembler.stats
    assert stats.quotes > len(want) and stats.trades > 0 and stats.chains > 10
    assert stats.heartbeats < stats.bars + stats.quotes + stats.trades
    assert feed.end_reason.startswith("no data")
    assert record.intents and record.orders and record.outcomes, "the window should trade (else parity is empty)"

    replayed, replay_outs = run_replay(capture)
    assert replay_outs == outs
    assert replayed.intents == record.intents
    assert replayed.orders == record.orders
    assert replayed.rejections == record.rejections
    assert replayed.order_events == record.order_events
    assert replayed.outcomes == record.outcomes


def test_a_dropped_socket_is_backfilled_so_no_minute_is_missing(
        sim: SimProcess, day_file: Path, tmp_path: Path) -> None:
    capture = tmp_path / "live.jsonl"
    dropped: list[int] = []

    def drop_once(rec: SessionRecord) -> None:
        if rec.bars == 30 and not dropped:
            # the market moves on by 5 minutes while the client is away
            r = httpx.post(f"{sim.url}/sim/drop", json={"skip_bars": 5}, timeout=5)
            dropped.append(r.json()["dropped"])

    record, outs, feed = run_live(session_config(sim, capture), drop_once)
    assert dropped == [1]
    want = list(open_bars(day_file, "SPY"))
    assert ohlcv(bars_of(outs)) == ohlcv(want)  # the 5 skipped minutes came back over REST, in order
    s = feed.assembler.stats
    assert s.reconnects == 1 and s.backfills == 1 and s.backfilled >= 5
    stats = httpx.get(f"{sim.url}/sim/stats", timeout=5).json()
    assert stats["connections"] == 2 and stats["drops"] == 1
    replayed, replay_outs = run_replay(capture)  # the backfill is in the capture too
    assert replay_outs == outs and replayed.orders == record.orders


def test_a_refused_key_is_one_line_and_one_attempt(sim: SimProcess, tmp_path: Path) -> None:
    wrong = "pk-SENTINEL-wrong-9d2f"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "POLYGON_API_KEY": wrong, "POLYGON_BASE_URL": sim.url,
           "POLYGON_WS_URL": sim.url.replace("http://", "ws://"), "DREAMBOT_LOG_LEVEL": "WARNING",
           "DREAMBOT_CALIBRATION": "none"}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "services.cli", "run", "--live", "--duration", "30",
                           "--output-dir", str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("dreambot: error: polygon stream") and "refused the API key" in lines[0]
    assert "POLYGON_API_KEY" in lines[0] and wrong not in proc.stderr + proc.stdout
    assert elapsed < 20  # no retry loop up to --duration
    stats = httpx.get(f"{sim.url}/sim/stats", timeout=5).json()
    assert stats["auth_failures"] == 1 and stats["connections"] == 0


def test_services_mode_source_hands_over_each_arrival_at_once(sim: SimProcess, tmp_path: Path) -> None:
    """``python -m services.ingest.main`` runs the same feed through LiveSource: the runner pumps it in
    passes (``for root in source``) and publishes each pass when it ends; a pass must end as soon as
    what has arrived is handed over, not after a full batch, and the feed's end must end the source."""
    from services.app.stage_builders import build_ingest_service
    from services.core.calendar import default_calendar
    from services.core.metrics import StageMetrics
    from services.core.state import MemoryState
    from services.ingest.polygon_live import LiveSource
    from services.runtime.service import ServiceContext

    config = session_config(sim, tmp_path / "live.jsonl", DREAMBOT_SESSION="ingest-live")
    ctx = ServiceContext("ingest", config, StageMetrics("ingest"), default_calendar())
    ctx._state = MemoryState(prefix=config.name)  # type: ignore[assignment]
    parts = build_ingest_service(ctx)
    source = parts.source
    assert isinstance(source, LiveSource)
    # a service runs until stopped; here the feed ends once the sim's window is streamed
    source.feed.config = dataclasses.replace(source.feed.config, idle_exit_s=2.0, duration_s=60.0)
    passes: list[list[Output]] = []
    while True:
        batch = list(source)  # one pass, as Participant._pump_source takes it
        if not batch:
            break
        passes.append(batch)
    for close in parts.on_close:
        close()
    bars = [o for p in passes for o in p if o.topic == topics.MD_BARS]
    assert len(bars) == 100  # the whole window
    assert len(passes) > 50 and max(len(p) for p in passes) < 100  # minute by minute, not in one batch
    assert ctx.state.get("dreambot:ingest_heartbeat") is not None

