"""Parity: the real SPY session through Kafka + Redis, one process per stage, equals the embedded run.

One replay (module fixture) of ``data/sample/spy_1min_2025-07-09.csv`` with every stage in its own
process in replay lockstep; meanwhile malformed messages are written into the stages' input topics.
The tests then compare, byte for byte and in order per key, every event on features, signals, orders,
risk_commands, executions and outcomes with what the embedded runner publishes for the same data, and
check the dead letters, the endpoints, the Redis state and the clean shutdown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import orjson
import pytest
from confluent_kafka import Producer

from services import launcher
from services.app.stages import STAGE_INPUTS
from services.core import keys, topics
from services.core.dlq import DeadLetter, decode_dead_letter
from services.core.events import Bar, OrderEvent, OrderRequest, SignalIntent, TradeOutcome, encode_msgpack
from services.core.redis_state import RedisState
from services.runtime.lockstep import pipeline_lag
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.redis_server import RedisServer
from tests.integration.services.conftest import (
    DATA,
    STAGE_ENV,
    SYMBOLS,
    Published,
    Reference,
    assert_same,
    new_session,
    read_published,
    read_topic,
)

pytestmark = pytest.mark.integration

JUNK_KEY = b"JUNK"
# (topic, value) written by hand into input topics mid-replay, and the dead letters each must cause.
_BAD_BAR = msgspec.msgpack.encode({"type": "bar", "ts": 1, "symbol": "SPY", "open": -1.0, "high": 1.0,
                                   "low": 1.0, "close": 1.0, "volume": 1.0})
JUNK: list[tuple[str, bytes | None, dict[str, str]]] = [
    (topics.MD_BARS, b"\xc1 not msgpack", {"features": "decode_error", "oms": "decode_error"}),  # oms: intrabar
    (topics.MD_CHAIN, None, {"features": "empty_payload", "signals": "empty_payload", "oms": "empty_payload"}),
    (topics.FEATURES, _BAD_BAR, {"signals": "decode_error", "risk": "decode_error", "oms": "decode_error"}),
    (topics.SIGNALS, encode_msgpack(Bar(ts=1, symbol="SPY", open=1, high=1, low=1, close=1, volume=1)),
     {"risk": "handler_error", "oms": "handler_error"}),
    (topics.ORDERS, b'{"type": "order_request"}', {"oms": "decode_error"}),
    (topics.RISK_COMMANDS, b"\x00\x01\x02", {"risk": "decode_error", "oms": "decode_error"}),
    (topics.EXECUTIONS, b"garbage", {"risk": "decode_error"}),
]


@dataclass
class Run:
    deployment: launcher.Deployment
    published: Published
    rounds: int
    replay_s: float
    letters: list[DeadLetter]
    metrics: dict[str, str]
    healthy: dict[str, int | None]
    lag: dict[tuple[str, str], int]
    snapshot: dict[str, object]
    oms_stream: int
    exit_codes: dict[str, int | None]


def _wait_progress(bootstrap: str, prefix: str, features_at_least: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(read_topic(bootstrap, topics.qualified(prefix, topics.FEATURES))) < features_at_least:
        assert time.monotonic() < deadline, "replay made no progress"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def run(broker: KafkaBroker, redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Run:
    session = new_session("parity")
    storage = tmp_path_factory.mktemp("parity")
    dep = launcher.up(session, SYMBOLS, DATA, kafka_bootstrap=broker.bootstrap, redis_url=redis.url,
                      storage=storage, env=STAGE_ENV)
    try:
        started = time.monotonic()
        _wait_progress(broker.bootstrap, dep.prefix, 300)
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        for topic, value, _ in JUNK:
            producer.produce(topics.qualified(dep.prefix, topic), value=value, key=JUNK_KEY)
        assert producer.flush(10) == 0
        rounds = dep.wait_replay(timeout_s=300)
        replay_s = time.monotonic() - started
        expected_letters = sum(len(stages) for _, _, stages in JUNK)
        deadline = time.monotonic() + 30
        while True:
            raw = read_topic(broker.bootstrap, topics.qualified(dep.prefix, topics.DLQ))
            if len(raw) >= expected_letters or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        letters = [decode_dead_letter(v) for _, v in raw]
        metrics = {n: launcher.http_text(p.url("/metrics")) for n, p in dep.processes.items()}
        healthy = {n: launcher.http_status(p.url("/healthz")) for n, p in dep.processes.items()}
        deadline = time.monotonic() + 20
        while True:
            lag = pipeline_lag(broker.bootstrap, dep.prefix, STAGE_INPUTS)
            if not any(lag.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        state = RedisState(redis.url, session)
        snapshot = orjson.loads(state.get(keys.POSITIONS) or b"{}")
        stream = state.length(keys.OMS_METRICS_STREAM)
        state.close()
        published = read_published(broker.bootstrap, dep.prefix)
        published.by_topic = {t: {k: v for k, v in ks.items() if k != JUNK_KEY.decode()}
                              for t, ks in published.by_topic.items()}
        exit_codes = dep.down(timeout_s=30)
    finally:
        dep.down(timeout_s=10)
    return Run(dep, published, rounds.current.number, replay_s, letters, metrics, healthy, lag, snapshot,
               stream, exit_codes)


def test_trades_happen(embedded_reference: Reference) -> None:
    ref = embedded_reference.published
    assert ref.count(topics.SIGNALS, SignalIntent) > 0
    assert ref.count(topics.ORDERS, OrderRequest) > 0
    fills = [e for e in ref.events(topics.EXECUTIONS) if isinstance(e, OrderEvent) and e.status == "filled"]
    assert len(fills) > 0
    assert ref.count(topics.OUTCOMES, TradeOutcome) > 0


def test_intents_orders_and_fills_are_byte_identical(run: Run, embedded_reference: Reference) -> None:
    assert_same(run.published, embedded_reference.published, (topics.SIGNALS, topics.ORDERS, topics.EXECUTIONS))
    assert run.published.count(topics.ORDERS, OrderRequest) > 0


def test_features_commands_and_outcomes_are_byte_identical(run: Run, embedded_reference: Reference) -> None:
    assert_same(run.published, embedded_reference.published, (topics.FEATURES, topics.RISK_COMMANDS,
                                                                topics.OUTCOMES))


def test_malformed_inputs_land_in_the_dlq_with_reasons(run: Run) -> None:
    prefix = run.deployment.prefix + "."
    got = sorted((x.topic.removeprefix(prefix), x.stage, x.reason) for x in run.letters)
    want = sorted((topic, stage, reason) for topic, _, stages in JUNK for stage, reason in stages.items())
    assert got == want
    bad_bar = next(x for x in run.letters if x.topic.endswith(".features"))
    assert bad_bar.field == "$.open" and bad_bar.payload == _BAD_BAR
    assert all(x.detail for x in run.letters)


def test_stages_stay_healthy_and_shut_down_cleanly(run: Run) -> None:
    assert set(run.healthy.values()) == {200}
    assert run.exit_codes == dict.fromkeys(("ingest", "features", "signals", "risk", "oms"), 0)


def test_every_group_has_consumed_everything(run: Run) -> None:
    assert run.lag, "no lag measured"
    assert not any(run.lag.values()), {k: v for k, v in run.lag.items() if v}


def test_oms_snapshot_and_metrics_stream_in_redis(run: Run, embedded_reference: Reference) -> None:
    oms = embedded_reference.session.oms
    assert run.snapshot["flat"] == oms.is_flat()
    assert run.snapshot["realized_pnl"] == pytest.approx(oms.positions.realized())
    assert run.oms_stream > 0


def test_metrics_endpoints(run: Run) -> None:
    m = run.metrics
    assert 'dreambot_orders_total{stage="oms",status="filled"}' in m["oms"]
    assert "dreambot_tick_to_intent_seconds_count" in m["signals"]
    assert 'dreambot_tick_to_order_seconds_count{stage="oms"}' in m["oms"]
    assert 'dreambot_intent_to_order_seconds_count{stage="oms"}' in m["oms"]
    assert 'dreambot_kill_switch_engaged{stage="risk"} 0.0' in m["risk"]
    assert 'dreambot_pnl_usd{kind="realized",stage="oms"}' in m["oms"]
    assert 'dreambot_events_out_total{stage="ingest",topic="md.bars"}' in m["ingest"]
    assert "dreambot_kafka_lag_messages" in m["features"]
    assert 'dreambot_dead_letters_total{stage="risk"} 1.0' in m["risk"]


def test_replay_speed_is_reported(run: Run, record_property: pytest.RecordProperty) -> None:
    record_property("lockstep_rounds", run.rounds)
    record_property("replay_seconds", round(run.replay_s, 1))
    assert run.rounds > 0


def test_audit_log_is_one_record_per_event(run: Run, embedded_reference: Reference) -> None:
    lines = Path(run.deployment.audit_path).read_bytes().splitlines()
    assert len(lines) == len(embedded_reference.audit)
    assert [orjson.loads(x) for x in lines] == [orjson.loads(orjson.dumps(r)) for r in embedded_reference.audit]
