"""The console's layout and callbacks, driven with injected sources (MemoryState, mock Prometheus)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import httpx
import plotly.graph_objects as go
import pytest
from plotly.utils import PlotlyJSONEncoder

from services.core import keys
from services.core.state import MemoryState, StateUnavailable
from services.dashboard import app as console_app
from services.dashboard.access import CSRF_COOKIE, AccessGuard, AccessPolicy
from services.dashboard.app import Console, ConsoleConfig, build_app, duration, number
from services.dashboard.auth import Actor, SessionSigner, UserDirectory, hash_password
from services.dashboard.sources import PANELS, PrometheusSource, SessionSource
from tests.unit.dashboard.test_sources import MATRIX, NOW_NS, SNAPSHOT, VECTOR, _DownStore

ORDERS_VECTOR = {"status": "success", "data": {"resultType": "vector", "result": [
    {"metric": {"status": "filled"}, "value": [1795581980.275, "3"]},
    {"metric": {"status": "rejected"}, "value": [1795581980.275, "1"]}]}}
LATENCY_MATRIX = {"status": "success", "data": {"resultType": "matrix", "result": [
    {"metric": {"quantile": "p50"}, "values": [[1795581972.9, "0.015"], [1795581980.4, "0.015"]]},
    {"metric": {"quantile": "p99"}, "values": [[1795581972.9, "NaN"], [1795581980.4, "0.0199"]]}]}}


def _json(component: Any) -> str:
    return json.dumps(component, cls=PlotlyJSONEncoder)


def _text(component: Any) -> str:
    """All strings inside a component tree (what a browser would show, roughly)."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, list | tuple):
            for item in node:
                walk(item)
        elif hasattr(node, "children"):
            walk(node.children)

    walk(component)
    return " ".join(out)


def _ids(component: Any) -> set[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, list | tuple):
            for item in node:
                walk(item)
            return
        ident = getattr(node, "id", None)
        if isinstance(ident, str):
            found.add(ident)
        if hasattr(node, "children"):
            walk(node.children)

    walk(component)
    return found


PASSWORD = "correct horse battery"
HASH = hash_password(PASSWORD, log2_n=10)  # cheap for tests; the shipped cost is log2 N = 15
OPERATOR = Actor("alice", "operator", "sid-alice")
VIEWER = Actor("bob", "viewer", "sid-bob")


def _guard() -> AccessGuard:
    users = UserDirectory.parse(f"alice:operator:{HASH}\nbob:viewer:{HASH}")
    return AccessGuard(AccessPolicy(users, SessionSigner(b"k" * 32, 3600), ("localhost",)), "DreamBot · test")


def _prometheus(requests: list[httpx.Request] | None = None) -> PrometheusSource:
    def handler(request: httpx.Request) -> httpx.Response:
        if requests is not None:
            requests.append(request)
        query = request.url.params["query"]
        if "dreambot_orders_total" in query:
            return httpx.Response(200, json=ORDERS_VECTOR)
        if "tick_to_order" in query:
            return httpx.Response(200, json=LATENCY_MATRIX)
        return httpx.Response(200, json=MATRIX if request.url.path.endswith("query_range") else VECTOR)

    return PrometheusSource("http://prom:9090", client=httpx.Client(transport=httpx.MockTransport(handler)))


@pytest.fixture
def store() -> MemoryState:
    mem = MemoryState("paper-1")
    mem.set(keys.POSITIONS, json.dumps(SNAPSHOT).encode())
    mem.set(keys.INGEST_HEARTBEAT, json.dumps({"ts": NOW_NS - 42 * 10**9, "seq": 3}).encode())
    mem.append(keys.OMS_METRICS_STREAM, json.dumps({"event": "fill", "order_id": "o-6", "latency_ms": 4.2}).encode())
    return mem


@pytest.fixture
def console(store: MemoryState) -> Iterator[Console]:
    prom = _prometheus()
    yield Console(
        ConsoleConfig("paper-1", refresh_s=2, window_s=600, redis_display="redis://redis:6379/0",
                      prometheus_display=prom.display_url),
        SessionSource(store, clock_ns=lambda: NOW_NS, stale_after_s=30),
        prom,
        clock_ns=lambda: NOW_NS,
    )
    prom.close()


# --- layout -----------------------------------------------------------------------------------------


def test_layout_has_every_panel_and_control(console: Console) -> None:
    app = build_app(console, _guard())
    page = console_app.layout(console, OPERATOR)
    ids = _ids(page)
    expected = {console_app.KS_STATUS, console_app.KS_ENGAGE, console_app.KS_RELEASE, console_app.KS_CONFIRM,
                console_app.KS_CANCEL, console_app.KS_CONFIRM_BAR, console_app.HEARTBEAT, console_app.PNL,
                console_app.POSITIONS, console_app.ORDERS, console_app.OMS_METRICS, console_app.REFRESH,
                console_app.KS_WHY, console_app.KS_AUDIT, console_app.WHO}
    expected |= {f"prom-{p.key}-graph" for p in PANELS} | {f"prom-{p.key}-values" for p in PANELS}
    assert expected <= ids
    header = _text(page.children[0])
    assert "session paper-1" in header and "Redis redis://redis:6379/0" in header
    assert "Prometheus http://prom:9090" in header and "signed in as alice (operator)" in header
    interval = next(c for c in page.children if getattr(c, "id", None) == console_app.REFRESH)
    assert interval.interval == 2000
    assert len(app.callback_map) == 4  # the router and the overview's three
    assert "ks-pending" not in ids  # the armed action is not kept in the page


def _find(component: Any, ident: str) -> Any:
    if getattr(component, "id", None) == ident:
        return component
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list | tuple) else [children]:
        if child is not None and not isinstance(child, str) and (found := _find(child, ident)) is not None:
            return found
    return None


def test_a_viewer_sees_the_kill_switch_controls_disabled(console: Console) -> None:
    for actor, locked in ((VIEWER, True), (None, True), (OPERATOR, False)):
        page = console_app.layout(console, actor)
        for ident in (console_app.KS_ENGAGE, console_app.KS_RELEASE, console_app.KS_CONFIRM, console_app.KS_WHY):
            assert _find(page, ident).disabled is locked, (actor, ident)


def test_page_shows_no_secret_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.dashboard.main import load_settings, make_console

    monkeypatch.setenv("DREAMBOT_REDIS_URL", "redis://default:hunter2@redis:6379/0?password=hunter2")
    monkeypatch.setenv("DREAMBOT_PROMETHEUS_URL", "http://ops:s3cr3t@127.0.0.1:9/?token=tok3n")
    monkeypatch.setenv("TRADIER_TOKEN", "tr4dier")
    console = make_console(load_settings(session="paper-1"))
    build_app(console, _guard())
    page = _json(console_app.layout(console, OPERATOR))
    redis_down = console.state.store
    console.state.store = _DownStore(StateUnavailable(
        "Redis at redis:6379/0 unreachable (GET): Error connecting to redis://default:hunter2@redis:6379"))
    state = console.refresh_state()
    prom = console.refresh_prometheus()
    shown = page + _json([getattr(state, f.name) for f in fields(state)]) + _json([v.values for v in prom.values()])
    for secret in ("hunter2", "s3cr3t", "tok3n", "tr4dier"):
        assert secret not in shown
    assert "unavailable: Redis at redis:6379/0 unreachable" in shown
    assert "unavailable: Prometheus at http://127.0.0.1:9/ unreachable" in shown
    if redis_down is not None and hasattr(redis_down, "close"):
        redis_down.close()


# --- Redis panels -----------------------------------------------------------------------------------


def test_refresh_state_renders_book_pnl_heartbeat_and_stream(console: Console) -> None:
    view = console.refresh_state()
    positions = _text(view.positions)
    assert "SPY251219C00600000" in positions and "QQQ251219P00500000" not in positions
    assert "2.35" in positions and "-40.00" in positions
    orders = _text(view.orders)
    assert "o-7" in orders and "working" in orders and "stop_loss" in orders
    pnl = _text(view.pnl)
    assert "$125.50" in pnl and "-$40.00" in pnl and "$85.50" in pnl and "paper" in pnl
    assert "released" in _text(view.kill_switch) and "OMS sees: released" in _text(view.kill_switch)
    assert "42.0 s old" in _text(view.heartbeat) and "STALE" in _text(view.heartbeat)
    assert view.heartbeat_class == "card stale-card"
    stream = _text(view.oms_metrics)
    assert "fill" in stream and "o-6" in stream and "4.20" in stream
    assert view.updated.startswith("updated 2026-11-25")


def test_fresh_heartbeat_and_engaged_switch(console: Console, store: MemoryState) -> None:
    store.set(keys.INGEST_HEARTBEAT, json.dumps({"ts": NOW_NS - 10**9 // 2, "seq": 4}).encode())
    store.set(keys.KILL_SWITCH, b'{"engaged": true, "reason": "DailyLossLimit", "ts": 1, "source": "risk"}')
    view = console.refresh_state()
    assert "500 ms old" in _text(view.heartbeat) and "fresh" in _text(view.heartbeat)
    assert view.heartbeat_class == "card"
    assert "ENGAGED — DailyLossLimit" in _text(view.kill_switch) and "by risk" in _text(view.kill_switch)


def test_empty_session_renders_placeholders(console: Console) -> None:
    console.state.store = MemoryState("empty")
    view = console.refresh_state()
    assert _text(view.positions) == "no open positions"
    assert _text(view.orders) == "no working orders"
    assert "no positions snapshot" in _text(view.pnl)
    assert "no heartbeat yet" in _text(view.heartbeat) and view.heartbeat_class == "card stale-card"
    assert "is empty" in _text(view.oms_metrics)


# --- Prometheus panels ------------------------------------------------------------------------------


def test_refresh_prometheus_builds_figures_and_value_tables(store: MemoryState) -> None:
    requests: list[httpx.Request] = []
    prom = _prometheus(requests)
    console = Console(ConsoleConfig("paper-1", window_s=600), SessionSource(store, clock_ns=lambda: NOW_NS), prom,
                      clock_ns=lambda: NOW_NS)
    views = console.refresh_prometheus()
    assert set(views) == {p.key for p in PANELS}
    ranged = [r for r in requests if r.url.path.endswith("query_range")]
    assert {r.url.params["end"] for r in ranged} == {"1795581980.000"}
    assert {r.url.params["start"] for r in ranged} == {"1795581380.000"}
    assert {r.url.params["step"] for r in ranged} == {"2.5"}

    lag = views["kafka_lag"]
    assert lag.graph_style == {"display": "block"}
    [bar] = lag.figure.data
    assert isinstance(bar, go.Bar) and list(bar.x) == ["oms orders"] and list(bar.y) == [42.0]
    assert _text(lag.values) == "series now oms orders 42 msgs"

    orders = views["orders_by_status"]
    assert [t.name for t in orders.figure.data] == ["filled", "rejected"]
    assert "filled 3 orders" in _text(orders.values) and "rejected 1 orders" in _text(orders.values)

    pnl = views["pnl"]
    [line] = pnl.figure.data
    assert isinstance(line, go.Scatter) and line.name == "oms realized" and list(line.y) == [125.5] * 3
    assert _text(pnl.values) == "series now oms realized $125.50"
    assert [str(x)[:19] for x in pnl.figure.layout.xaxis.range] == ["2026-11-25 04:36:20", "2026-11-25 04:46:20"]
    assert line.mode == "lines"

    latency = views["tick_to_order"]
    p50, p99 = latency.figure.data
    assert (p50.name, p99.name) == ("p50", "p99")
    assert list(p99.y) == [None, 0.0199] and p99.mode == "lines+markers"
    assert "p50 15 ms" in _text(latency.values) and "p99 19.9 ms" in _text(latency.values)


def test_prometheus_without_data_or_down() -> None:
    empty = {"status": "success", "data": {"resultType": "matrix", "result": []}}
    prom = PrometheusSource("http://p:1", client=httpx.Client(transport=httpx.MockTransport(
        lambda r: httpx.Response(200, json=empty if "range" in r.url.path else
                                 {"status": "success", "data": {"resultType": "vector", "result": []}}))))
    console = Console(ConsoleConfig("s"), SessionSource(None, clock_ns=lambda: NOW_NS), prom, clock_ns=lambda: NOW_NS)
    view = console.refresh_prometheus()["pnl"]
    assert view.graph_style == {"display": "none"} and _text(view.values) == "no data for this session yet"

    down = Console(ConsoleConfig("s"), SessionSource(None, clock_ns=lambda: NOW_NS), PrometheusSource(""))
    for view in down.refresh_prometheus().values():
        assert view.graph_style == {"display": "none"}
        assert _text(view.values) == "unavailable: no Prometheus URL configured (set DREAMBOT_PROMETHEUS_URL)"
        assert view.figure.data == ()


def test_value_formatting() -> None:
    assert number(0.0123, "s") == "12.3 ms" and number(2.5, "s") == "2.5 s"
    assert number(-1234.5, "USD") == "-$1,234.50" and number(42.0, "msgs") == "42 msgs"
    assert number(float("nan"), "s") == "no data" and number(None) == "—"
    assert duration(3725) == "1 h 02 min" and duration(65) == "1 min 05 s" and duration(0.25) == "250 ms"


# --- kill switch ------------------------------------------------------------------------------------


def _audit(store: MemoryState) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in store.read(keys.KILL_SWITCH_AUDIT, 100)]


def test_engage_needs_confirmation_then_writes_the_exact_flag_and_audits_it(console: Console,
                                                                           store: MemoryState) -> None:
    armed = console.kill_switch_action(console_app.KS_ENGAGE, OPERATOR, "  spread  blew out ")
    assert armed.confirm_style == {"display": "block"}
    assert "Engage the kill switch for session paper-1?" in armed.prompt and "“spread blew out”" in armed.prompt
    assert store.get(keys.KILL_SWITCH) is None and _audit(store) == []

    done = console.kill_switch_action(console_app.KS_CONFIRM, OPERATOR)
    assert store.get(keys.KILL_SWITCH) == b'{"engaged":true,"reason":"Manual","ts":%d,"source":"console"}' % NOW_NS
    assert done.confirm_style == {"display": "none"} and done.written == NOW_NS
    assert done.result == "Kill switch engaged at 2026-11-25 04:46:20 UTC."
    assert _audit(store) == [{"ts": NOW_NS, "action": "engage", "outcome": "written", "user": "alice",
                              "role": "operator", "why": "spread blew out", "reason": "Manual", "detail": "",
                              "source": "console"}]

    again = console.kill_switch_action(console_app.KS_ENGAGE, OPERATOR, "again")
    assert again.result == "Already engaged: nothing was written." and again.written is None
    view = console.refresh_state()
    shown = _text(view.audit)
    assert "alice (operator)" in shown and "spread blew out" in shown and "written" in shown
    assert "by console (alice: “spread blew out”)" in _text(view.kill_switch)


def test_confirm_acts_only_on_what_this_session_armed(console: Console, store: MemoryState) -> None:
    # A Confirm with nothing armed (whatever the page claims) writes nothing.
    stray = console.kill_switch_action(console_app.KS_CONFIRM, OPERATOR, "forged")
    assert stray.result.startswith("Nothing to confirm")
    # Another session's arm does not count for this one.
    console.kill_switch_action(console_app.KS_ENGAGE, Actor("alice", "operator", "sid-other"), "tab two")
    assert console.kill_switch_action(console_app.KS_CONFIRM, OPERATOR).result.startswith("Nothing to confirm")
    # Cancel disarms; a Confirm is good once.
    console.kill_switch_action(console_app.KS_ENGAGE, OPERATOR, "will cancel")
    assert console.kill_switch_action(console_app.KS_CANCEL, OPERATOR).result == "Canceled: nothing was written."
    assert console.kill_switch_action(console_app.KS_CONFIRM, OPERATOR).result.startswith("Nothing to confirm")
    assert store.get(keys.KILL_SWITCH) is None and _audit(store) == []


def test_an_armed_action_lapses(store: MemoryState) -> None:
    now = [NOW_NS]
    console = Console(ConsoleConfig("paper-1", confirm_ttl_s=60), SessionSource(store, clock_ns=lambda: now[0]),
                      PrometheusSource(""), clock_ns=lambda: now[0])
    console.kill_switch_action(console_app.KS_ENGAGE, OPERATOR, "slow hands")
    now[0] += 61 * 10**9
    assert console.kill_switch_action(console_app.KS_CONFIRM, OPERATOR).result.startswith("Nothing to confirm")
    assert store.get(keys.KILL_SWITCH) is None


def test_a_reason_is_required(console: Console, store: MemoryState) -> None:
    for why in (None, "", "  ", "ok", "x" * 201):
        step = console.kill_switch_action(console_app.KS_ENGAGE, OPERATOR, why)
        assert step.result.startswith("Say why first") and step.confirm_style == {"display": "none"}
    assert console.kill_switch_action(console_app.KS_CONFIRM, OPERATOR).result.startswith("Nothing to confirm")
    assert store.get(keys.KILL_SWITCH) is None


def test_a_viewer_cannot_engage_and_the_refusal_is_audited(console: Console, store: MemoryState) -> None:
    step = console.kill_switch_action(console_app.KS_ENGAGE, VIEWER, "let me")
    assert step.result == "bob is a viewer: viewers cannot engage the kill switch."
    assert console.kill_switch_action(console_app.KS_CONFIRM, VIEWER).result.startswith("Nothing to confirm")
    assert store.get(keys.KILL_SWITCH) is None
    [entry] = _audit(store)
    assert (entry["user"], entry["role"], entry["action"], entry["outcome"]) == ("bob", "viewer", "engage", "refused")
    # An operator who armed and then lost the role (looked up per request) cannot confirm.
    console.kill_switch_action(console_app.KS_ENGAGE, OPERATOR, "armed as operator")
    demoted = console.kill_switch_action(console_app.KS_CONFIRM, Actor("alice", "viewer", OPERATOR.sid))
    assert "viewer now" in demoted.result and store.get(keys.KILL_SWITCH) is None


def test_confirm_refuses_when_the_flag_changed_since_arming(console: Console, store: MemoryState) -> None:
    store.set(keys.KILL_SWITCH, b'{"engaged":true,"reason":"Manual","ts":%d,"source":"operator"}' % (NOW_NS - 10**9))
    console.kill_switch_action(console_app.KS_RELEASE, OPERATOR, "all clear")
    store.set(keys.KILL_SWITCH, b'{"engaged":true,"reason":"DailyLossLimit","ts":%d,"source":"risk"}' % NOW_NS)
    step = console.kill_switch_action(console_app.KS_CONFIRM, OPERATOR)
    assert step.result.startswith("The kill switch changed since you armed this")
    assert json.loads(store.get(keys.KILL_SWITCH) or b"")["reason"] == "DailyLossLimit"


def _dll(ts: int) -> bytes:
    return b'{"engaged":true,"reason":"DailyLossLimit","ts":%d,"source":"risk"}' % ts


def test_a_daily_loss_limit_engagement_is_not_released_before_the_next_session(console: Console,
                                                                                store: MemoryState) -> None:
    # NOW_NS is 2026-11-24 23:46 in New York; engaged that afternoon, the next session is 2026-11-25.
    store.set(keys.KILL_SWITCH, _dll(NOW_NS - 8 * 3600 * 10**9))
    step = console.kill_switch_action(console_app.KS_RELEASE, OPERATOR, "I know better")
    assert step.confirm_style == {"display": "none"}
    assert step.result == ("It was engaged for DailyLossLimit on 2026-11-24; the console can release it from the "
                           "next session (2026-11-25, New York): nothing was written.")
    assert console.kill_switch_action(console_app.KS_CONFIRM, OPERATOR).result.startswith("Nothing to confirm")
    assert json.loads(store.get(keys.KILL_SWITCH) or b"")["engaged"] is True
    [entry] = _audit(store)
    assert entry["outcome"] == "refused" and entry["reason"] == "DailyLossLimit" and entry["why"] == "I know better"
    for unknown in (0, 1):  # typed by hand without a time / before the calendar starts
        store.set(keys.KILL_SWITCH, _dll(unknown))
        assert "nothing was written" in console.kill_switch_action(console_app.KS_RELEASE, OPERATOR, "try").result
    assert json.loads(store.get(keys.KILL_SWITCH) or b"")["engaged"] is True


def test_a_daily_loss_limit_engagement_of_an_earlier_session_can_be_released(console: Console,
                                                                             store: MemoryState) -> None:
    # Engaged on Friday 2026-11-20: the next session (Monday 2026-11-23) has begun.
    store.set(keys.KILL_SWITCH, _dll(NOW_NS - 4 * 86400 * 10**9))
    armed = console.kill_switch_action(console_app.KS_RELEASE, OPERATOR, "new day, loss reviewed")
    assert "It was engaged for DailyLossLimit." in armed.prompt
    done = console.kill_switch_action(console_app.KS_CONFIRM, OPERATOR)
    assert json.loads(store.get(keys.KILL_SWITCH) or b"") == {
        "engaged": False, "reason": "Manual", "ts": NOW_NS, "source": "console"}
    assert done.result.startswith("Kill switch released at")
    [entry] = _audit(store)
    assert (entry["action"], entry["outcome"], entry["reason"]) == ("release", "written", "DailyLossLimit")


def test_confirm_with_redis_down_says_nothing_was_written(console: Console, store: MemoryState) -> None:
    console.kill_switch_action(console_app.KS_ENGAGE, OPERATOR, "before the outage")
    console.state.store = _DownStore(StateUnavailable("Redis at r:6379/0 unreachable (GET x): refused"))
    step = console.kill_switch_action(console_app.KS_CONFIRM, OPERATOR)
    assert step.written is None
    assert _text(step.result) == "unavailable: Redis at r:6379/0 unreachable (GET x): refused — nothing was written"


# --- the Dash wiring (what the browser posts) -------------------------------------------------------


def _login(client: Any, user: str) -> str:
    page = client.get("/login").get_data(as_text=True)
    token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    resp = client.post("/login", data={"user": user, "password": PASSWORD, "csrf": token},
                       headers={"Origin": "http://localhost"})
    assert resp.status_code == 303, resp.get_data(as_text=True)[:300]
    cookie = client.get_cookie(CSRF_COOKIE)
    assert cookie is not None
    return str(cookie.value)


def _post(client: Any, output: str, outputs: list[tuple[str, str]], inputs: list[tuple[str, str, Any]],
          changed: list[str], state: list[tuple[str, str, Any]] = (),  # type: ignore[assignment]
          headers: dict[str, str] | None = None) -> dict[str, Any]:
    body = {
        "output": output,
        "outputs": [{"id": i, "property": p} for i, p in outputs],
        "inputs": [{"id": i, "property": p, "value": v} for i, p, v in inputs],
        "changedPropIds": changed,
        "state": [{"id": i, "property": p, "value": v} for i, p, v in state],
    }
    resp = client.post("/_dash-update-component", json=body, headers=headers or {})
    assert resp.status_code == 200, resp.data[:500]
    return dict(resp.get_json()["response"])


def test_dash_callbacks_arm_confirm_and_refresh(console: Console, store: MemoryState) -> None:
    app = build_app(console, _guard())
    client = app.server.test_client()
    csrf = _login(client, "alice")
    headers = {"Origin": "http://localhost", "X-CSRF-Token": csrf}
    assert client.get("/").status_code == 200
    ks_outputs = [("ks-confirm-bar", "style"), ("ks-prompt", "children"), ("ks-result", "children"),
                  ("ks-written", "data")]
    ks_output = ".." + "...".join(f"{i}.{p}" for i, p in ks_outputs) + ".."
    assert ks_output in app.callback_map

    def press(button: str, why: str | None) -> dict[str, Any]:
        clicks = {b: (1 if b == button else 0) for b in ("ks-engage", "ks-release", "ks-confirm", "ks-cancel")}
        return _post(client, ks_output, ks_outputs, [(b, "n_clicks", n) for b, n in clicks.items()],
                     [f"{button}.n_clicks"], [("ks-why", "value", why), ("ks-written", "data", None)], headers)

    armed = press("ks-engage", "unit test")
    assert armed["ks-confirm-bar"]["style"] == {"display": "block"}
    assert store.get(keys.KILL_SWITCH) is None
    done = press("ks-confirm", None)
    assert done["ks-written"]["data"] == NOW_NS
    assert json.loads(store.get(keys.KILL_SWITCH) or b"") == {
        "engaged": True, "reason": "Manual", "ts": NOW_NS, "source": "console"}

    state_output = next(k for k in app.callback_map if k.startswith("..ks-status.children"))
    names = [part.split(".") for part in state_output.strip(".").split("...")]
    refreshed = _post(client, state_output, [(i, p) for i, p in names],
                      [("refresh", "n_intervals", 1), ("ks-written", "data", NOW_NS)], ["refresh.n_intervals"],
                      headers=headers)
    assert "ENGAGED" in json.dumps(refreshed["ks-status"])
    assert "SPY251219C00600000" in json.dumps(refreshed["positions"])
    assert refreshed["heartbeat-card"]["className"] == "card stale-card"
    assert "unit test" in json.dumps(refreshed["ks-audit"])
