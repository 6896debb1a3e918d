"""The console's learner, stage-health and backtest-report pages in real Chromium, with real data.

The session is the real SPY recording of 2025-07-09 (``data/sample``):

- backtest page: ``dreambot run`` over it writes an output folder; the console (``--backtest-dir``)
  shows its equity curve, per-playbook table and trade list, checked against trades.json as parsed
  and summed here;
- learner page: the day's real FeatureVectors and TradeOutcomes (the embedded pipeline's, with the
  real replay feed writing the ingest heartbeat to a real redis-server) are published to a real
  Kafka broker, where a real learner service (``python -m services.learner.main``) learns from them
  and writes its view to Redis; the page's arms, model and change points equal that view, and the
  arms equal Beta(1 + wins, 1 + losses) counted here from the outcomes;
- health page: a real Prometheus scrapes that learner's /metrics; the page shows the learner's
  readiness, its Kafka lag and dead letters as Prometheus has them, the Redis
  heartbeats (ingest and learner) with their event times, and "no data" for series nobody exports.

Each test writes ``storage/screenshots/<page>.png``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.app.market_data import load_market_data
from services.app.stages import build_replay_feed
from services.backtest.embedded import EmbeddedSession
from services.core import keys, shared_state, topics
from services.core.calendar import iso_ny
from services.core.events import FeatureVector, TradeOutcome
from services.core.redis_state import RedisState
from services.core.session_config import SessionConfig
from services.core.settings import CONFIG_DIR, PROJECT_ROOT
from services.runtime.kafka_bus import KafkaBus, KafkaBusConfig
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.ports import free_port
from tests.harness.prometheus_server import PrometheusServer
from tests.harness.redis_server import RedisServer

pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By

from tests.integration.dashboard.conftest import (
    OPERATOR_PASSWORD,
    SESSION_DATA,
    Console,
    figure_data,
    screenshot,
    sign_in,
    until,
    wait_text,
)

pytestmark = pytest.mark.integration

# config/learner.yaml's context buckets, restated: a bucket is feature=bin with bin = edges <= value.
BUCKETS = (("adx_14", (20.0, 30.0)), ("minutes_since_open", (60.0, 240.0)))


_ROWS_JS = """
return Array.from(document.querySelectorAll('#' + arguments[0] + ' tbody tr')).map(tr => {
  const row = {};
  for (const td of tr.querySelectorAll('td')) {
    const cls = Array.from(td.classList).find(c => c.startsWith('col-'));
    if (cls) { row[cls.slice(4)] = td.innerText.trim(); }
  }
  return row;
});
"""


def table_rows(driver: Any, table_id: str) -> list[dict[str, str]]:
    """The rows of a page table as {column key: text} (cells carry class ``col-<key>``), read in one
    script so a refresh that replaces the table mid-read cannot tear it."""
    return list(driver.execute_script(_ROWS_JS, table_id))


def open_page(driver: Any, console: Console, path: str) -> None:
    sign_in(driver, console, "alice", OPERATOR_PASSWORD, path)
    if not driver.current_url.endswith(path):
        driver.get(console.url + path.lstrip("/"))


# --- the backtest report -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``dreambot run`` over the real SPY day into a temporary output folder."""
    out = tmp_path_factory.mktemp("ops-pages-run")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DREAMBOT_")}
    done = subprocess.run([sys.executable, "-m", "services.cli", "run", "--data", str(SESSION_DATA),
                           "--output-dir", str(out)], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"dreambot run failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return out


def test_backtest_page_shows_the_runs_equity_playbooks_and_trades(
    browser: Any, console_launcher: Any, run_output: Path
) -> None:
    trades = json.loads((run_output / "trades.json").read_text())
    closed = sorted((t for t in trades if t.get("status", "closed") == "closed"),
                    key=lambda t: (datetime.fromisoformat(t["exit_time"]), t["id"]))
    assert len(closed) >= 2, "the real day trades more than once"
    expected_equity, total = [0.0], 0.0
    for t in closed:
        total += t["pnl"]
        expected_equity.append(total)
    per_playbook = Counter(t["playbook"] for t in closed)

    console = console_launcher({"DREAMBOT_SESSION": "ops-backtest"}, ["--backtest-dir", str(run_output)])
    open_page(browser, console, "/backtest")
    wait_text(browser, "backtest-trades", closed[-1]["contract"], console=console)
    until(lambda: figure_data(browser, "backtest-equity") is not None, "the equity figure drawn")
    equity = figure_data(browser, "backtest-equity")
    assert equity is not None
    assert equity[0]["y"] == pytest.approx(expected_equity)
    assert equity[0]["x"][1:] == [t["exit_time"] for t in closed]
    peak, drawdown = 0.0, []
    for v in expected_equity:
        peak = max(peak, v)
        drawdown.append(v - peak)
    assert equity[1]["y"] == pytest.approx(drawdown)
    assert float(browser.find_element(By.ID, "backtest-equity-final").text) == pytest.approx(total, abs=0.005)

    playbooks = table_rows(browser, "backtest-playbooks")
    assert {r["playbook"]: int(r["trade_count"]) for r in playbooks} == dict(per_playbook)
    listed = table_rows(browser, "backtest-trades")
    assert [(r["playbook"], float(r["pnl"])) for r in listed] == [(t["playbook"], pytest.approx(t["pnl"], abs=1e-4))
                                                                  for t in closed]
    screenshot(browser, "backtest")


# --- the learner and stage health ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RealEvents:
    features: list[FeatureVector]
    outcomes: list[TradeOutcome]


@pytest.fixture(scope="module")
def learner_session() -> str:
    return f"it-ops-pages-{os.getpid()}-{int(time.time()) % 100000}"


@pytest.fixture(scope="module")
def real_events(redis_server: RedisServer, learner_session: str) -> RealEvents:
    """The real day through the embedded pipeline with Redis as the session's state (as in services mode):
    the replay feed writes the ingest heartbeat there and risk reads it back."""
    data = load_market_data(["SPY"], SESSION_DATA)
    state = RedisState(redis_server.url, learner_session)
    session = EmbeddedSession(SessionConfig(symbols=("SPY",), config_dir=CONFIG_DIR, calibration={"path": None}),
                              state=state)  # type: ignore[arg-type]  # any StateStore serves
    features: list[FeatureVector] = []
    outcomes: list[TradeOutcome] = []
    session.bus.subscribe(topics.FEATURES, lambda e: features.append(e) if isinstance(e, FeatureVector) else None,
                          group="ops-pages")
    session.bus.subscribe(topics.OUTCOMES, lambda e: outcomes.append(e) if isinstance(e, TradeOutcome) else None,
                          group="ops-pages")
    session.run(build_replay_feed(data.bars, state, session.calendar))
    assert features and outcomes, "the real day has feature vectors and closed trades"
    return RealEvents(features, outcomes)


@dataclass
class LearnerRun:
    session: str
    process: subprocess.Popen[bytes]
    http_port: int
    log: Path
    prometheus: PrometheusServer
    state: RedisState
    events: RealEvents

    def view(self) -> shared_state.LearnerView | None:
        raw = self.state.get(keys.LEARNER_VIEW)
        return None if raw is None else shared_state.decode_learner_view(raw)


@pytest.fixture(scope="module")
def learner_run(kafka_broker: KafkaBroker, redis_server: RedisServer, learner_session: str,
                real_events: RealEvents, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LearnerRun]:
    """A real learner service fed the real events over Kafka, and a Prometheus scraping it."""
    folder = tmp_path_factory.mktemp("ops-pages-learner")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DREAMBOT_", "OMS_"))}
    env.update(DREAMBOT_SESSION=learner_session, DREAMBOT_SYMBOLS="SPY",
               DREAMBOT_KAFKA_BOOTSTRAP=kafka_broker.bootstrap, DREAMBOT_REDIS_URL=redis_server.url,
               DREAMBOT_HTTP_PORT=str(port), DREAMBOT_LEARNER="off", DREAMBOT_CONFIG_DIR=str(CONFIG_DIR),
               DREAMBOT_CALIBRATION="none", PYTHONUNBUFFERED="1")
    log = folder / "learner.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "services.learner.main"], cwd=PROJECT_ROOT, env=env,
                                stdout=fh, stderr=subprocess.STDOUT)
    prometheus = PrometheusServer([f"127.0.0.1:{port}"], labels={"session": learner_session})
    run = LearnerRun(learner_session, proc, port, log, prometheus, RedisState(redis_server.url, learner_session),
                     real_events)
    try:
        def ready() -> bool:
            assert proc.poll() is None, f"learner exited:\n{log.read_text()[-3000:]}"
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        until(ready, "the learner service ready", timeout_s=90)
        bus = KafkaBus(KafkaBusConfig(kafka_broker.bootstrap, learner_session))
        for fv in real_events.features:
            bus.publish(topics.FEATURES, fv.symbol, fv)
        for outcome in real_events.outcomes:
            bus.publish(topics.OUTCOMES, outcome.underlying, outcome)
        bus.flush(30)
        bus.close()

        def handled() -> float:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            return sum(s.value for fam in text_string_to_metric_families(text) if fam.name == "dreambot_events_in"
                       for s in fam.samples if s.name.endswith("_total") and s.labels.get("topic") == topics.FEATURES)

        def learned_everything() -> bool:
            view = run.view()
            return (view is not None and view.model is not None and view.model.trades == len(real_events.outcomes)
                    and handled() >= len(real_events.features))

        until(learned_everything, "the learner's view of every outcome and feature", timeout_s=120)
        prometheus.start()
        prometheus.wait_for(f'dreambot_ready{{stage="learner",session="{learner_session}"}}', timeout_s=60)
        yield run
    finally:
        prometheus.close()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def bucket(context: dict[str, float]) -> str:
    parts = []
    for feature, edges in BUCKETS:
        value = context.get(feature)
        parts.append(f"{feature}={'na' if value is None else bisect_right(edges, value)}")
    return "|".join(parts)


def console_env(run: LearnerRun, redis_server: RedisServer) -> dict[str, str]:
    return {"DREAMBOT_SESSION": run.session, "DREAMBOT_REDIS_URL": redis_server.url,
            "DREAMBOT_PROMETHEUS_URL": run.prometheus.url}


def test_learner_page_shows_the_real_learners_arms_model_and_change_points(
    browser: Any, console_launcher: Any, learner_run: LearnerRun, redis_server: RedisServer
) -> None:
    view = learner_run.view()
    assert view is not None and view.model is not None
    # The oracle: Beta(1 + wins, 1 + losses) per (playbook, bucket), counted from the outcomes here.
    wins: Counter[tuple[str, str]] = Counter()
    losses: Counter[tuple[str, str]] = Counter()
    for o in learner_run.events.outcomes:
        (wins if o.pnl > 0 else losses)[(o.playbook, bucket(dict(o.context)))] += 1
    expected = {k: (1.0 + wins[k], 1.0 + losses[k]) for k in {*wins, *losses}}
    assert {(a.playbook, a.bucket): (a.alpha, a.beta) for a in view.arms} == expected

    console = console_launcher(console_env(learner_run, redis_server))
    open_page(browser, console, "/learner")
    wait_text(browser, "learner-source", f"Redis (session {learner_run.session})", console=console)
    shown = {(r["playbook"], r["bucket"]): (float(r["alpha"]), float(r["beta"]), float(r["pulls"]), float(r["mean"]))
             for r in table_rows(browser, "learner-arms")}
    assert shown == {k: (a, b, a + b - 2, pytest.approx(a / (a + b), abs=1e-4)) for k, (a, b) in expected.items()}
    assert browser.find_element(By.ID, "learner-model-id").text == view.model.id
    assert int(browser.find_element(By.ID, "learner-model-trades").text) == len(learner_run.events.outcomes)
    assert browser.find_element(By.ID, "learner-trained-through").text == iso_ny(
        max(o.exit_ts for o in learner_run.events.outcomes))[:19].replace("T", " ")
    until(lambda: figure_data(browser, "learner-arms-figure") is not None, "the arms figure drawn")
    if view.change_points:
        changes = table_rows(browser, "learner-changes")
        assert [(r["time"], r["regime"]) for r in changes] == [
            (iso_ny(c.ts)[:19].replace("T", " "), c.regime) for c in reversed(view.change_points)]
        assert table_rows(browser, "learner-regimes") == [{"underlying": "SPY", "regime": view.regimes["SPY"]}]
    else:
        wait_text(browser, "learner-changes-empty", "no change point recorded")
    screenshot(browser, "learner")


def test_health_page_shows_heartbeats_lag_and_errors_from_redis_and_prometheus(
    browser: Any, console_launcher: Any, learner_run: LearnerRun, redis_server: RedisServer
) -> None:
    beat = shared_state.decode_heartbeat(learner_run.state.get(keys.INGEST_HEARTBEAT) or b"")
    # The replay feed's last heartbeat: the end of the recording's last minute bar, read from the CSV here.
    lines = SESSION_DATA.read_text().splitlines()
    last_bar = datetime.fromisoformat(lines[-1].split(",")[0])
    assert beat.ts == (int(last_bar.timestamp()) + 60) * 1_000_000_000
    assert 0 < beat.seq <= len(lines) - 1
    view = learner_run.view()
    assert view is not None
    lag = learner_run.prometheus.wait_for(
        f'sum by (stage) (dreambot_kafka_lag_messages{{stage="learner",session="{learner_run.session}"}})')
    expected_lag = float(lag[0]["value"][1])

    console = console_launcher(console_env(learner_run, redis_server))
    before = time.time_ns()
    open_page(browser, console, "/health")
    wait_text(browser, "health-stages", "learner", console=console)
    after = time.time_ns()
    beats = {r["source"]: r for r in table_rows(browser, "health-beats")}
    assert beats["ingest"]["time"] == iso_ny(beat.ts)[:19].replace("T", " ")
    assert beats["ingest"]["detail"] == f"seq {beat.seq}"
    assert beats["learner"]["time"] == iso_ny(view.ts - view.ts % 1_000_000_000)[:19].replace("T", " ")
    # The age is measured against the console's clock at render: between the page's open and now.
    age = float(beats["ingest"]["age_s"])
    assert (before - beat.ts) / 1e9 - 5 <= age <= (after - beat.ts) / 1e9 + 5
    stages = {r["stage"]: r for r in table_rows(browser, "health-stages")}
    learner = stages["learner"]
    assert learner["ready"] == "1"
    assert float(learner["lag"]) == expected_lag
    # Whatever Prometheus itself answers for the learner's dead letters (absent: "no data").
    letters = learner_run.prometheus.query(
        f'sum by (stage) (dreambot_dead_letters_total{{stage="learner",session="{learner_run.session}"}})')
    assert learner["dead_letters"] == (str(int(float(letters[0]["value"][1]))) if letters else "no data")
    assert learner["broker_errors"] == "no data"  # the learner has no broker
    assert 0 <= float(learner["scrape_age"]) < 30
    guards = {r["guard"]: r["value"] for r in table_rows(browser, "health-guards")}
    assert guards["Daily PnL (USD)"] == "no data" and guards["Loss limit used"] == "no data"
    screenshot(browser, "health")
