"""Console data sources: Prometheus answers (as a real Prometheus 2.42 sends them) and Redis JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import httpx
import pytest

from services.core import keys, shared_state
from services.core.shared_state import KillSwitchAudit, KillSwitchState
from services.core.state import MemoryState, StateError, StateUnavailable
from services.dashboard.sources import (
    PANELS,
    PrometheusSource,
    Sample,
    Series,
    SessionSource,
    SourceError,
    SourceUnreachableError,
    Unavailable,
    fetch_panels,
    kill_switch_payload,
    label_selector,
    parse_audit_entry,
    parse_book,
    parse_heartbeat,
    parse_kill_switch,
    parse_matrix,
    parse_vector,
    safe_reason,
    strip_credentials,
)

# Captured from a real Prometheus 2.42 scraping services.core.metrics.StageMetrics("oms").
VECTOR = json.loads(
    '{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"dreambot_kafka_lag_messages",'
    '"instance":"127.0.0.1:53043","job":"dreambot","session":"paper-1","stage":"oms","topic":"orders"},'
    '"value":[1795581980.273,"42"]}]}}'
)
MATRIX = json.loads(
    '{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"dreambot_pnl_usd",'
    '"instance":"127.0.0.1:53043","job":"dreambot","kind":"realized","session":"paper-1","stage":"oms"},'
    '"values":[[1795581976.274,"125.5"],[1795581978.274,"125.5"],[1795581980.274,"125.5"]]}]}}'
)
BAD_DATA = json.loads(
    '{"status":"error","errorType":"bad_data","error":"invalid parameter \\"query\\": 1:6: parse error: '
    'unclosed left parenthesis"}'
)
NOW_NS = 1_795_581_980_000_000_000


# --- Prometheus JSON -------------------------------------------------------------------------------


def test_parse_vector_reads_labels_time_and_value() -> None:
    [sample] = parse_vector(VECTOR)
    assert sample.value == 42.0
    assert sample.ts == pytest.approx(1795581980.273)
    assert sample.labels["stage"] == "oms"
    assert sample.labels["topic"] == "orders"
    assert sample.labels["session"] == "paper-1"


def test_parse_vector_accepts_a_scalar_and_special_values() -> None:
    assert parse_vector({"status": "success", "data": {"resultType": "scalar", "result": [1.5, "7"]}}) == [
        Sample({}, 1.5, 7.0)]
    doc = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [1, "NaN"]}, {"metric": {}, "value": [1, "+Inf"]}]}}
    nan, inf = parse_vector(doc)
    assert math.isnan(nan.value)
    assert inf.value == math.inf


def test_parse_matrix_reads_points_oldest_first() -> None:
    [series] = parse_matrix(MATRIX)
    assert series.labels["kind"] == "realized"
    assert [v for _, v in series.points] == [125.5, 125.5, 125.5]
    assert series.points[0][0] < series.points[-1][0]
    assert series.last == 125.5
    assert Series({}, ()).last is None


def test_an_error_answer_becomes_its_message() -> None:
    with pytest.raises(SourceError, match=r"bad_data: invalid parameter .*unclosed left parenthesis"):
        parse_vector(BAD_DATA)


@pytest.mark.parametrize("doc, match", [
    (MATRIX, "expected an instant vector"),
    ([1, 2], "not a JSON object"),
    ({"status": "success"}, "without data.result"),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1]}]}},
     "malformed sample"),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "x"]}]}},
     "non-numeric"),
])
def test_malformed_instant_answers_raise(doc: object, match: str) -> None:
    with pytest.raises(SourceError, match=match):
        parse_vector(doc)


def test_parse_matrix_refuses_a_vector() -> None:
    with pytest.raises(SourceError, match="expected a range vector"):
        parse_matrix(VECTOR)


# --- Prometheus HTTP client ------------------------------------------------------------------------


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def test_query_and_query_range_call_the_http_api() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=MATRIX if request.url.path.endswith("query_range") else VECTOR)

    prom = PrometheusSource("http://prom:9090/prometheus/", client=_client(handler))
    assert prom.query("up")[0].value == 42.0
    assert prom.query_range("dreambot_pnl_usd", 100.0, 160.0, 7.5)[0].last == 125.5
    instant, ranged = seen
    assert instant.method == "GET"
    assert instant.url.path == "/prometheus/api/v1/query"
    assert instant.url.params["query"] == "up"
    assert ranged.url.path == "/prometheus/api/v1/query_range"
    assert dict(ranged.url.params) == {"query": "dreambot_pnl_usd", "start": "100.000", "end": "160.000",
                                       "step": "7.5"}
    assert "authorization" not in instant.headers


def test_credentials_in_the_url_become_basic_auth_and_are_never_displayed() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=VECTOR)

    prom = PrometheusSource("https://ops:s3cr3t@prom.example:9443/?token=abc", client=_client(handler))
    prom.query("up")
    assert seen[0].headers["authorization"] == httpx.BasicAuth("ops", "s3cr3t")._auth_header
    assert "s3cr3t" not in str(seen[0].url)
    assert prom.display_url == "https://prom.example:9443/"


def test_http_errors_carry_prometheus_message_or_status() -> None:
    prom = PrometheusSource("http://prom:9090", client=_client(lambda r: httpx.Response(400, json=BAD_DATA)))
    with pytest.raises(SourceError, match="bad_data"):
        prom.query("sum((")
    prom = PrometheusSource("http://prom:9090", client=_client(lambda r: httpx.Response(502, text="<html>")))
    with pytest.raises(SourceError, match="HTTP 502 without JSON"):
        prom.query("up")


def test_an_unreachable_prometheus_blanks_every_panel_after_one_try() -> None:
    calls: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    prom = PrometheusSource("http://user:pw@127.0.0.1:9", client=_client(refuse))
    with pytest.raises(SourceUnreachableError):
        prom.query("up")
    calls.clear()
    data = fetch_panels(prom, PANELS, "paper-1", 1000.0, 600.0, 5.0)
    assert len(calls) == 1
    assert set(data) == {p.key for p in PANELS}
    reasons = {str(v) for v in data.values()}
    assert reasons == {"unavailable: Prometheus at http://127.0.0.1:9 unreachable: [Errno 111] Connection refused"}


def test_one_bad_query_does_not_blank_the_other_panels() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "dreambot_orders_total" in request.url.params["query"]:
            return httpx.Response(422, json={"status": "error", "errorType": "execution", "error": "boom"})
        return httpx.Response(200, json=MATRIX if request.url.path.endswith("query_range") else VECTOR)

    data = fetch_panels(PrometheusSource("http://p:1", client=_client(handler)), PANELS, "s", 1000.0, 600.0, 5.0)
    assert data["orders_by_status"] == Unavailable("Prometheus execution: boom")
    lag, pnl = data["kafka_lag"], data["pnl"]
    assert isinstance(lag, list) and isinstance(lag[0], Sample) and lag[0].value == 42.0
    assert isinstance(pnl, list) and isinstance(pnl[0], Series) and pnl[0].last == 125.5


def test_no_prometheus_url_means_unavailable_without_network() -> None:
    data = fetch_panels(PrometheusSource(""), PANELS, "s", 1000.0, 600.0, 5.0)
    assert {str(v) for v in data.values()} == {
        "unavailable: no Prometheus URL configured (set DREAMBOT_PROMETHEUS_URL)"}


def test_panels_select_the_session_or_unlabelled_series() -> None:
    assert label_selector("paper-1") == 'session=~"paper\\\\-1|"'
    exprs = {p.key: p.expr("paper-1") for p in PANELS}
    assert exprs["kafka_lag"] == 'sum by (stage, topic) (dreambot_kafka_lag_messages{session=~"paper\\\\-1|"})'
    assert all("$SESSION" not in e and 'session=~"paper' in e for e in exprs.values())
    names = ("dreambot_events_in_total", "dreambot_processing_seconds_bucket", "dreambot_tick_to_order_seconds_bucket",
             "dreambot_kafka_lag_messages", "dreambot_orders_total", "dreambot_pnl_usd")
    assert all(any(n in e for e in exprs.values()) for n in names)


# --- credentials ----------------------------------------------------------------------------------


@pytest.mark.parametrize("url, shown", [
    ("redis://:hunter2@redis:6379/0", "redis://redis:6379/0"),
    ("redis://default:hunter2@10.0.0.5:6380/2?ssl_cert_reqs=none", "redis://10.0.0.5:6380/2"),
    ("http://prometheus.monitoring:9090", "http://prometheus.monitoring:9090"),
    ("https://u:p@[::1]:9090/prom?token=xyz#frag", "https://[::1]:9090/prom"),
    ("", ""),
])
def test_strip_credentials(url: str, shown: str) -> None:
    assert strip_credentials(url) == shown


def test_safe_reason_strips_urls_and_tokens_inside_text() -> None:
    reason = safe_reason("GET https://u:hunter2@host/x?token=abc failed\nAuthorization: Bearer abc.def")
    assert "hunter2" not in reason and "abc" not in reason
    assert reason.startswith("GET https://host/x failed")


# --- Redis JSON ------------------------------------------------------------------------------------


SNAPSHOT = {
    "ts": NOW_NS - 2_000_000_000,
    "broker": "paper",
    "kill_switch": {"engaged": False, "reason": ""},
    "flat": False,
    "orders": [{"order_id": "o-7", "client_order_id": "c-7", "underlying": "SPY", "contract": "SPY251219C00600000",
                "leg": "stop_loss", "side": "sell", "status": "working", "quantity": 2, "filled_quantity": 0,
                "limit_price": None, "stop_price": 1.1}],
    "positions": [
        {"underlying": "SPY", "contract": "SPY251219C00600000", "quantity": 2, "avg_price": 2.35, "mark": 2.15,
         "realized_pnl": 0.0, "unrealized_pnl": -40.0, "fees": 1.3},
        {"underlying": "QQQ", "contract": "QQQ251219P00500000", "quantity": 0, "avg_price": 0.0, "mark": None,
         "realized_pnl": 125.5, "unrealized_pnl": 0.0, "fees": 2.6},
    ],
    "realized_pnl": 125.5,
    "unrealized_pnl": -40.0,
}


def test_parse_book_keeps_open_positions_and_working_orders() -> None:
    book = parse_book(json.dumps(SNAPSHOT).encode())
    assert book is not None
    assert [p["contract"] for p in book.positions] == ["SPY251219C00600000"]
    assert [o["order_id"] for o in book.orders] == ["o-7"]
    assert (book.realized_pnl, book.unrealized_pnl, book.broker, book.flat) == (125.5, -40.0, "paper", False)
    assert book.oms_kill_switch is not None and not book.oms_kill_switch.engaged
    assert parse_book(None) is None


def _with(**changes: object) -> bytes:
    return json.dumps({**SNAPSHOT, **changes}).encode()


@pytest.mark.parametrize("raw, match", [
    (b"{not json", r"^dreambot:positions: not JSON"),
    (b"[]", r"Expected `object`, got `array`"),
    (_with(positions=3), r"Expected `array`, got `int` - at `\$.positions`"),
    (_with(realized_pnl="lots"), r"Expected `float`, got `str` - at `\$.realized_pnl`"),
    (json.dumps({k: v for k, v in SNAPSHOT.items() if k != "orders"}).encode(), "missing required field `orders`"),
])
def test_parse_book_refuses_malformed_snapshots(raw: bytes, match: str) -> None:
    with pytest.raises(SourceError, match=match):
        parse_book(raw)


def test_parse_kill_switch_and_heartbeat() -> None:
    assert not parse_kill_switch(None).engaged
    flag = parse_kill_switch(b'{"engaged": true, "reason": "DailyLossLimit", "ts": 5, "source": "risk"}')
    assert (flag.engaged, flag.reason, flag.ts, flag.source) == (True, "DailyLossLimit", 5, "risk")
    typed = parse_kill_switch(b'{"engaged": true}')  # as lenient as risk and the operator
    assert (typed.reason, typed.source) == ("Manual", "operator")
    with pytest.raises(SourceError, match=r"dreambot:kill_switch: Expected `bool`, got `str` - at `\$.engaged`"):
        parse_kill_switch(b'{"engaged": "yes"}')
    beat = parse_heartbeat(b'{"ts": %d, "seq": 9}' % (NOW_NS - 45 * 10**9), NOW_NS, 30.0)
    assert beat is not None and beat.stale and beat.age_s == pytest.approx(45.0) and beat.seq == 9
    fresh = parse_heartbeat(b'{"ts": %d, "seq": 10}' % (NOW_NS - 10**9), NOW_NS, 30.0)
    assert fresh is not None and not fresh.stale
    assert parse_heartbeat(None, NOW_NS, 30.0) is None


def _session(store: object = None) -> tuple[SessionSource, MemoryState]:
    mem = MemoryState("paper-1")
    return SessionSource(mem if store is None else store, clock_ns=lambda: NOW_NS), mem  # type: ignore[arg-type]


def test_session_source_reads_every_key() -> None:
    source, mem = _session()
    mem.set(keys.POSITIONS, json.dumps(SNAPSHOT).encode())
    mem.set(keys.INGEST_HEARTBEAT, json.dumps({"ts": NOW_NS - 3 * 10**9, "seq": 77}).encode())
    mem.set(keys.KILL_SWITCH, kill_switch_payload(True, NOW_NS - 10**9))
    for i in range(25):
        mem.append(keys.OMS_METRICS_STREAM, json.dumps({"seq": i, "api_token": "t0ps3cret"}).encode())
    mem.append(keys.OMS_METRICS_STREAM, b"plain text entry")
    snap = source.snapshot()
    assert not isinstance(snap.kill_switch, Unavailable) and snap.kill_switch.engaged
    assert snap.kill_switch.source == "console"
    assert not isinstance(snap.heartbeat, Unavailable) and snap.heartbeat is not None
    assert snap.heartbeat.seq == 77 and snap.heartbeat.age_s == pytest.approx(3.0) and not snap.heartbeat.stale
    assert not isinstance(snap.book, Unavailable) and snap.book is not None and snap.book.realized_pnl == 125.5
    assert not isinstance(snap.oms_metrics, Unavailable)
    assert len(snap.oms_metrics) == 20
    assert snap.oms_metrics[0] == {"entry": "plain text entry"}
    assert snap.oms_metrics[1] == {"seq": 24, "api_token": "***"}


def test_a_malformed_key_blanks_only_its_panel() -> None:
    source, mem = _session()
    mem.set(keys.POSITIONS, b"{oops")
    snap = source.snapshot()
    assert isinstance(snap.book, Unavailable) and "not JSON" in snap.book.reason
    assert snap.heartbeat is None
    assert not isinstance(snap.kill_switch, Unavailable) and not snap.kill_switch.engaged


class _DownStore:
    """A StateStore whose Redis is gone (what RedisState raises after its retries)."""

    def __init__(self, error: StateError) -> None:
        self.error = error
        self.calls = 0

    def get(self, key: str) -> bytes | None:
        self.calls += 1
        raise self.error

    def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        self.calls += 1
        raise self.error

    def delete(self, key: str) -> None:
        raise self.error

    def append(self, stream: str, value: bytes, maxlen: int = 10_000) -> None:
        raise self.error

    def read(self, stream: str, count: int = 100) -> list[bytes]:
        self.calls += 1
        raise self.error


def test_an_unreachable_redis_blanks_every_panel_after_one_read() -> None:
    down = _DownStore(StateUnavailable(
        "Redis at 127.0.0.1:6390/0 unreachable (GET paper-1:dreambot:kill_switch): Error 111 connecting"))
    source = SessionSource(down, clock_ns=lambda: NOW_NS)
    snap = source.snapshot()
    assert down.calls == 1
    assert snap.kill_switch == snap.heartbeat == snap.book == snap.oms_metrics
    assert str(snap.book).startswith("unavailable: Redis at 127.0.0.1:6390/0 unreachable")
    none = SessionSource(None, clock_ns=lambda: NOW_NS).snapshot()
    assert str(none.kill_switch) == "unavailable: no Redis URL configured (set DREAMBOT_REDIS_URL)"


def test_set_kill_switch_writes_the_flag_risk_reads() -> None:
    source, mem = _session()
    written = source.set_kill_switch(True)
    assert written == b'{"engaged":true,"reason":"Manual","ts":%d,"source":"console"}' % NOW_NS
    assert mem.get(keys.KILL_SWITCH) == written
    assert shared_state.decode_kill_switch(written) == KillSwitchState(True, "Manual", NOW_NS, "console")
    source.set_kill_switch(False)
    assert json.loads(mem.get(keys.KILL_SWITCH) or b"") == {"engaged": False, "reason": "Manual", "ts": NOW_NS,
                                                            "source": "console"}
    with pytest.raises(SourceUnreachableError):
        SessionSource(_DownStore(StateUnavailable("gone")), clock_ns=lambda: 1).set_kill_switch(True)


def test_audit_entries_round_trip_and_a_bad_one_is_shown_as_unavailable() -> None:
    store = MemoryState("paper-1")
    source = SessionSource(store, clock_ns=lambda: NOW_NS)
    entry = KillSwitchAudit(NOW_NS, "engage", "written", "alice", "operator", "why not", "Manual", "", "console")
    source.append_audit(entry)
    store.append(keys.KILL_SWITCH_AUDIT, b'{"ts": 1, "action": "explode"}')
    newest, oldest = source.audit()
    assert oldest == entry
    assert isinstance(newest, Unavailable) and "dreambot:kill_switch_audit" in newest.reason
    bad = parse_audit_entry(b"not json")
    assert isinstance(bad, Unavailable) and bad.reason.startswith("dreambot:kill_switch_audit: not JSON")
