"""A calibration published overnight reaches a running services-mode session at the next session open.

Real Kafka and redis-server (tests/integration/conftest.py); the five stages run as processes
(:func:`services.launcher.up`) and replay two real SPY sessions (2025-07-08 and 2025-07-09, cut from
/work/shared/data) in lockstep. Calibration A is in force when the stages start. Late on day 1 (in
the post-market bars, well before day 2's first bar) the ingest is frozen and calibration B is
published with the nightly job's own publish step (:func:`ops.nightly_calibration.publish`: temporary
file, fsync, rename). Then the replay resumes.

Hand-derived expectations (config/playbooks.yaml sizes these playbooks with risk_per_trade_usd 200,
max_contracts 5; config/risk.yaml caps orders at max_contracts_per_order 10 x the multiplier):

* day 1 is exactly what an embedded replay pinned to A publishes (same intents, same order sizes),
  including a pot_fade intent whose nearest-OTM probability of touch is below B's threshold 0.75;
* day 2: every intent's size is min(floor(200 x 0.25 / ((limit - stop) x 100)), 5), smaller than A's
  for at least one; every pot_fade intent has prob_touch >= 0.75, so the one A fires at 0.71 is gone;
  risk caps each order at floor(10 x 0.25) = 2 contracts;
* both stages log the reload once and export B (``dreambot_calibration_info``) on /metrics.
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import pytest
from confluent_kafka import Consumer, TopicPartition
from pydantic import SecretStr

from ops.nightly_calibration import publish
from services import launcher
from services.app.market_data import load_market_data
from services.app.stages import build_replay_feed
from services.backtest.embedded import EmbeddedSession
from services.core import topics
from services.core.calendar import ny_date
from services.core.events import OrderRequest, SignalIntent, decode_msgpack
from services.core.session_config import CalibrationSettings, SessionConfig
from services.core.settings import CONFIG_DIR
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.redis_server import RedisServer
from tests.integration.services.conftest import APPROVAL_KEY, STAGE_ENV, broker, new_session, read_topic, redis

__all__ = ["broker", "redis"]

T = TypeVar("T")

pytestmark = pytest.mark.integration

SOURCE = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "spy_1min_2025-07-08_2025-07-10.csv"
DAY1, DAY2 = "2025-07-08", "2025-07-09"
BUDGET_USD, MAX_CONTRACTS, MAX_PER_ORDER = 200, 5, 10  # config/playbooks.yaml sizing, config/risk.yaml
A = {"risk_multiplier": 1.0, "pot_threshold": 0.7, "mlflow_run_id": "run-a",
     "inputs": {"symbols": ["SPY"], "first_session": "2025-04-08", "last_session": "2025-07-07", "sessions": 60}}
B = {"risk_multiplier": 0.25, "pot_threshold": 0.75, "mlflow_run_id": "run-b",
     "inputs": {"symbols": ["SPY"], "first_session": "2025-04-09", "last_session": DAY1, "sessions": 60}}


@pytest.fixture
def two_sessions(tmp_path: Path) -> Path:
    if not SOURCE.is_file():
        pytest.skip(f"real SPY minutes not here: {SOURCE}")
    lines = SOURCE.read_text().splitlines()
    out = tmp_path / "spy_2025-07-08_09.csv"
    out.write_text("\n".join([lines[0], *(ln for ln in lines[1:] if ln.startswith((DAY1, DAY2)))]) + "\n")
    return out


def expected_size(intent: SignalIntent, multiplier: float) -> int:
    per_contract = round((intent.limit_price - intent.stop_loss) * 100, 6)
    return min(math.floor(BUDGET_USD * multiplier / per_contract + 1e-9), MAX_CONTRACTS)


def embedded_pinned(data_path: Path, calibration: Path) -> tuple[list[SignalIntent], list[OrderRequest], int]:
    """What an embedded replay publishes with the calibration it starts with, and day 1's feature count."""
    data = load_market_data(["SPY"], data_path)
    config = SessionConfig(symbols=("SPY",), config_dir=CONFIG_DIR, calibration=CalibrationSettings(path=calibration),
                           approval_key=SecretStr(APPROVAL_KEY))
    session = EmbeddedSession(config)
    day1_features: list[int] = []
    session.bus.subscribe(topics.FEATURES, lambda e: day1_features.append(1) if str(ny_date(e.ts)) == DAY1 else None,
                          group="probe")
    record = session.run(build_replay_feed(data.bars, session.state, session.calendar))
    return record.intents, record.orders, len(day1_features)


def features_published(bootstrap: str, prefix: str) -> Callable[[], int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "calibration-reload-probe"})
    name = topics.qualified(prefix, topics.FEATURES)
    parts = [TopicPartition(name, p) for p in consumer.list_topics(name, timeout=10).topics[name].partitions]
    return lambda: sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts)


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def by_day(events: Sequence[object], kind: type[T]) -> dict[str, list[T]]:
    out: dict[str, list[T]] = {DAY1: [], DAY2: []}
    for e in events:
        if isinstance(e, kind):
            out[str(ny_date(e.ts))].append(e)  # type: ignore[attr-defined]
    return out


@pytest.fixture
def deployment(broker: KafkaBroker, redis: RedisServer, tmp_path: Path, two_sessions: Path) -> Iterator[
        tuple[launcher.Deployment, Path]]:
    calibration = tmp_path / "published" / "calibration.json"
    publish(A, calibration)
    env = dict(STAGE_ENV, DREAMBOT_CALIBRATION=str(calibration))
    dep = launcher.up(new_session("calib"), ("SPY",), two_sessions, kafka_bootstrap=broker.bootstrap,
                      redis_url=redis.url, storage=tmp_path / "services", env=env)
    try:
        yield dep, calibration
    finally:
        dep.down(timeout_s=20)


@pytest.mark.timeout(1500)
def test_a_calibration_published_overnight_reaches_the_running_stages_at_the_next_session_open(
        deployment: tuple[launcher.Deployment, Path], two_sessions: Path, tmp_path: Path) -> None:
    dep, calibration = deployment
    ref_intents, ref_orders, day1_bars = embedded_pinned(two_sessions, tmp_path / "published" / "calibration.json")
    ref = by_day(ref_intents, SignalIntent)
    gated = [i for i in ref[DAY2] if i.playbook.startswith("pot_fade") and i.features["pot_nearest_otm"] < 0.75]
    below_b_on_day1 = [i for i in ref[DAY1] if i.playbook.startswith("pot_fade")
                       and i.features["pot_nearest_otm"] < 0.75]
    assert gated and below_b_on_day1, "the data no longer exercises the threshold change"
    assert day1_bars > 800  # day 1 has post-market bars after 16:00 to freeze in

    # Late on day 1 (the post-market, ~140 bars before day 2's 04:00 bar): freeze, publish B, resume.
    bars = features_published(dep.bootstrap, dep.prefix)
    wait_for("the replay to reach day 1's post-market", lambda: bars() >= day1_bars - 140)
    pid = dep.processes["ingest"].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        frozen_at = bars()
        assert frozen_at < day1_bars, "day 2 began before the publish"
        publish(B, calibration)
    finally:
        os.kill(pid, signal.SIGCONT)
    dep.wait_replay(timeout_s=1200)

    events = [decode_msgpack(v) for _, v in read_topic(dep.bootstrap, topics.qualified(dep.prefix, topics.SIGNALS))]
    got = by_day(events, SignalIntent)
    orders = by_day([decode_msgpack(v) for _, v in read_topic(dep.bootstrap, topics.qualified(dep.prefix,
                                                                                             topics.ORDERS))],
                    OrderRequest)

    # Day 1: calibration A throughout, although B was on disk for its last ~140 bars.
    assert [(i.id, i.quantity) for i in got[DAY1]] == [(i.id, i.quantity) for i in ref[DAY1]]
    assert all(i.quantity == expected_size(i, 1.0) for i in got[DAY1])
    assert {i.id for i in below_b_on_day1} <= {i.id for i in got[DAY1]}  # B's threshold would have gated it
    ref_orders_day1 = [(o.intent_id, o.quantity) for o in ref_orders if str(ny_date(o.ts)) == DAY1]
    assert [(o.intent_id, o.quantity) for o in orders[DAY1]] == ref_orders_day1

    # Day 2: B from the first bar.
    assert got[DAY2], "no intent on day 2"
    assert all(i.quantity == expected_size(i, 0.25) for i in got[DAY2])
    assert any(expected_size(i, 0.25) < expected_size(i, 1.0) for i in got[DAY2]), "B's multiplier changed no size"
    assert all(i.features["pot_nearest_otm"] >= 0.75 for i in got[DAY2] if i.playbook.startswith("pot_fade"))
    assert not {i.id for i in gated} & {i.id for i in got[DAY2]}
    non_pot = [i.id for i in ref[DAY2] if not i.playbook.startswith("pot_fade")]
    assert [i.id for i in got[DAY2] if not i.playbook.startswith("pot_fade")] == non_pot
    cap = math.floor(MAX_PER_ORDER * 0.25)
    intents = {i.id: i for i in got[DAY2]}
    assert orders[DAY2], "risk approved nothing on day 2"
    assert all(o.quantity <= min(cap, intents[o.intent_id].quantity) for o in orders[DAY2])
    first = orders[DAY2][0]  # nothing open yet at day 2's first order: only the per-order cap binds
    assert first.quantity == min(cap, intents[first.intent_id].quantity) == 2

    # Both stages say which calibration is in force.
    sha = hashlib.sha256(calibration.read_bytes()).hexdigest()
    for stage in ("signals", "risk"):
        metrics = launcher.http_text(dep.processes[stage].url("/metrics"))
        info = [ln for ln in metrics.splitlines() if ln.startswith("dreambot_calibration_info{")]
        assert len(info) == 1, info
        for label in (f'stage="{stage}"', 'first_session="2025-04-09"', f'last_session="{DAY1}"',
                      'mlflow_run_id="run-b"', f'sha256="{sha}"'):
            assert label in info[0], (label, info[0])
        assert info[0].endswith(" 1.0")
        log = dep.processes[stage].log.read_text(encoding="utf-8", errors="replace")
        assert log.count("calibration reloaded") == 1, stage
        assert f"session {DAY2}: calibration in force" in log and "run-b" in log
    assert set(dep.down().values()) == {0}
