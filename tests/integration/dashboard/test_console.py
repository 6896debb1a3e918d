"""The ops console end to end, with real services: a prometheus server scraping a prometheus_client
exporter (services.core.metrics.StageMetrics with known values), a redis-server holding an OMS
positions snapshot and an ingest heartbeat, the console served by ``python -m services.dashboard.main``
as a subprocess, and headless Chromium (Debian ``chromium`` + ``chromium-driver``) driven by selenium.

Access control end to end: the console asks for a sign-in, a viewer cannot engage (not even by
re-enabling the button in the page), an operator engages and releases with the confirmation decided
on the server and the audit entry appears on the page and in Redis, scripted forged POSTs to
``/_dash-update-component`` (no session; a session with a foreign Origin; a session without the CSRF
token) change nothing in Redis, and a ``DailyLossLimit`` engagement cannot be released.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.core import keys
from services.core.metrics import StageMetrics
from services.core.redis_state import RedisState
from tests.harness.ports import free_port
from tests.harness.prometheus_server import PrometheusServer
from tests.harness.redis_server import RedisServer

pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.integration.dashboard.conftest import (
    ADMIN_PASSWORD,
    OPERATOR_PASSWORD,
    SESSION_KEY,
    VIEWER_PASSWORD,
    WAIT_S,
    Console,
    sign_in,
)
from tests.integration.dashboard.conftest import text_of as _text_of
from tests.integration.dashboard.conftest import until as _until
from tests.integration.dashboard.conftest import wait_text as _wait_text

pytestmark = pytest.mark.integration

CONTRACT = "SPY251219C00600000"


def test_console_shows_redis_and_prometheus_and_engages_the_kill_switch(
    browser: Any, redis_server: RedisServer, session_name: str, tmp_path: Path
) -> None:
    from prometheus_client import CollectorRegistry, start_http_server

    # A stage exporter with known values (the names every stage serves, from services.core.metrics).
    registry = CollectorRegistry()
    metrics = StageMetrics("oms", registry)
    metrics.set_lag({"orders": 42})
    metrics.orders.labels("oms", "filled").inc(3)
    metrics.pnl.labels("oms", "realized").set(125.5)
    for _ in range(4):
        metrics.count_in("orders")
        metrics.observe(metrics.tick_to_order, 0.012)
    exporter_port = free_port()
    exporter, exporter_thread = start_http_server(exporter_port, addr="127.0.0.1", registry=registry)

    # The OMS snapshot and the ingest heartbeat, as the stages write them.
    state = RedisState(redis_server.url, session_name)
    now = time.time_ns()
    snapshot = {
        "ts": now, "broker": "paper", "kill_switch": {"engaged": False, "reason": ""}, "flat": False,
        "orders": [{"order_id": "ord-17", "client_order_id": "c-17", "underlying": "SPY", "contract": CONTRACT,
                    "leg": "take_profit", "side": "sell", "status": "working", "quantity": 2, "filled_quantity": 0,
                    "limit_price": 3.1, "stop_price": None}],
        "positions": [{"underlying": "SPY", "contract": CONTRACT, "quantity": 2, "avg_price": 2.35, "mark": 2.15,
                       "realized_pnl": 0.0, "unrealized_pnl": -40.25, "fees": 1.3}],
        "realized_pnl": 125.5, "unrealized_pnl": -40.25,
    }
    state.set(keys.POSITIONS, json.dumps(snapshot).encode())
    state.set(keys.INGEST_HEARTBEAT, json.dumps({"ts": now, "seq": 1234}).encode())
    state.append(keys.OMS_METRICS_STREAM, json.dumps({"event": "fill", "order_id": "ord-16"}).encode())

    prometheus = PrometheusServer([f"127.0.0.1:{exporter_port}"], labels={"session": session_name})
    console: Console | None = None
    try:
        prometheus.start()
        console = Console({"DREAMBOT_SESSION": session_name, "DREAMBOT_REDIS_URL": redis_server.url,
                           "DREAMBOT_PROMETHEUS_URL": prometheus.url})
        # While the console starts: Prometheus has scraped the exporter, with the session label.
        [lag_series] = prometheus.wait_for(f'dreambot_kafka_lag_messages{{session="{session_name}"}}')
        assert lag_series["value"][1] == "42"
        sign_in(browser, console.wait(), "alice", OPERATOR_PASSWORD)

        positions = _wait_text(browser, "positions", CONTRACT, console=console)
        assert "2.35" in positions and "-40.25" in positions
        assert "ord-17" in _wait_text(browser, "orders", "ord-17", "working")
        pnl = _wait_text(browser, "pnl", "$125.50", "-$40.25", "$85.25")
        assert "paper" in pnl
        assert "seq 1234" in _wait_text(browser, "heartbeat", "fresh")
        assert "ord-16" in _wait_text(browser, "oms-metrics", "fill")
        assert "released" in _wait_text(browser, "ks-status", "released")

        # Prometheus' first scrape of the exporter lands within a few seconds; the panels follow.
        lag = _wait_text(browser, "prom-kafka_lag-values", "oms orders", "42 msgs", console=console)
        assert "unavailable" not in lag
        assert "filled 3 orders" in _wait_text(browser, "prom-orders_by_status-values", "filled")
        assert "oms realized $125.50" in _wait_text(browser, "prom-pnl-values", "$125.50")
        assert browser.find_element(By.ID, "prom-kafka_lag-graph").is_displayed()

        # Engage needs a reason and a confirmation: the first click only arms it (on the server).
        browser.find_element(By.ID, "ks-why").send_keys("integration test")
        browser.find_element(By.ID, "ks-engage").click()
        WebDriverWait(browser, WAIT_S).until(lambda d: d.find_element(By.ID, "ks-confirm-bar").is_displayed())
        assert f"session {session_name}" in _text_of(browser, "ks-prompt")
        assert state.get(keys.KILL_SWITCH) is None
        browser.find_element(By.ID, "ks-confirm").click()
        _until(lambda: state.get(keys.KILL_SWITCH) is not None, "the kill switch flag in Redis")
        flag = json.loads(state.get(keys.KILL_SWITCH) or b"")
        assert flag["engaged"] is True and flag["reason"] == "Manual" and flag["source"] == "console"
        assert set(flag) == {"engaged", "reason", "ts", "source"}
        assert now <= flag["ts"] <= time.time_ns()
        assert "ENGAGED — Manual" in _wait_text(browser, "ks-status", "ENGAGED")
        assert "Kill switch engaged at" in _wait_text(browser, "ks-result", "engaged at")
        audit = _wait_text(browser, "ks-audit", "integration test")
        assert "alice (operator)" in audit and "engage" in audit and "written" in audit

        shot = tmp_path / "console.png"
        assert browser.save_screenshot(str(shot))
        data = shot.read_bytes()
        assert len(data) > 10_000 and data.startswith(b"\x89PNG\r\n\x1a\n")
        assert console.proc.poll() is None, console.log()
    finally:
        if console is not None:
            console.close()
        prometheus.close()
        exporter.shutdown()
        exporter_thread.join(5)
        state.close()


def test_console_renders_with_redis_and_prometheus_down(browser: Any, tmp_path: Path) -> None:
    dead_redis, dead_prometheus = free_port(), free_port()
    console = Console({"DREAMBOT_SESSION": "paper-down",
                       "DREAMBOT_REDIS_URL": f"redis://default:hunter2@127.0.0.1:{dead_redis}/0",
                       "DREAMBOT_PROMETHEUS_URL": f"http://ops:s3cr3t@127.0.0.1:{dead_prometheus}"})
    try:
        sign_in(browser, console.wait(), "admin", ADMIN_PASSWORD)
        status = _wait_text(browser, "ks-status", "unavailable: Redis at 127.0.0.1", console=console)
        assert f"127.0.0.1:{dead_redis}" in status
        assert _wait_text(browser, "positions", "unavailable:").startswith("unavailable: Redis")
        assert "unavailable: Redis" in _wait_text(browser, "heartbeat", "unavailable:")
        prom = _wait_text(browser, "prom-events_rate-values", "unavailable:")
        assert prom.startswith(f"unavailable: Prometheus at http://127.0.0.1:{dead_prometheus} unreachable")
        assert not browser.find_element(By.ID, "prom-events_rate-graph").is_displayed()
        page = browser.find_element(By.TAG_NAME, "body").text
        assert f"Redis redis://127.0.0.1:{dead_redis}/0" in page
        assert "hunter2" not in page and "s3cr3t" not in page and "hunter2" not in browser.page_source
        assert "unavailable: Redis" in _wait_text(browser, "ks-audit", "unavailable:")
        assert browser.save_screenshot(str(tmp_path / "down.png"))
        assert console.proc.poll() is None, console.log()
        log = console.log_path.read_text(errors="replace")
        for secret in ("hunter2", "s3cr3t", ADMIN_PASSWORD, SESSION_KEY, OPERATOR_PASSWORD, "scrypt$"):
            assert secret not in log, secret
    finally:
        console.close()


# --- access control ---------------------------------------------------------------------------------


def _audit(state: RedisState) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in state.read(keys.KILL_SWITCH_AUDIT, 100)]


def _kill_switch_post(button: str, why: str | None = "forged") -> dict[str, Any]:
    """The body Dash's renderer posts for a kill-switch button press (the console's current callback)."""
    outputs = [("ks-confirm-bar", "style"), ("ks-prompt", "children"), ("ks-result", "children"),
               ("ks-written", "data")]
    buttons = ("ks-engage", "ks-release", "ks-confirm", "ks-cancel")
    return {
        "output": ".." + "...".join(f"{i}.{p}" for i, p in outputs) + "..",
        "outputs": [{"id": i, "property": p} for i, p in outputs],
        "inputs": [{"id": b, "property": "n_clicks", "value": 1 if b == button else 0} for b in buttons],
        "changedPropIds": [f"{button}.n_clicks"],
        "state": [{"id": "ks-why", "property": "value", "value": why},
                  {"id": "ks-written", "property": "data", "value": None}],
    }


def _old_attack(button: str) -> dict[str, Any]:
    """The reported attack's shape: the client supplies the confirm step's state ("engage is pending")."""
    body = _kill_switch_post(button)
    body["state"].insert(0, {"id": "ks-pending", "property": "data", "value": "engage"})
    return body


def test_access_control_in_a_real_browser(browser: Any, redis_server: RedisServer, session_name: str) -> None:
    state = RedisState(redis_server.url, session_name)
    console = Console({"DREAMBOT_SESSION": session_name, "DREAMBOT_REDIS_URL": redis_server.url})
    try:
        console.wait()
        # Signed out, every page sends the browser to the sign-in form; a wrong password stays there.
        browser.delete_all_cookies()
        browser.get(console.url)
        WebDriverWait(browser, WAIT_S).until(lambda d: "/login" in d.current_url)
        assert "ks-engage" not in browser.page_source
        browser.find_element(By.ID, "login-user").send_keys("alice")
        browser.find_element(By.ID, "login-password").send_keys("not-her-password")
        browser.find_element(By.ID, "login-submit").click()
        assert "Wrong user or password." in _wait_text(browser, "login-error", "Wrong", console=console)

        # Scripted forgeries without a session: refused before Dash, nothing in Redis.
        url = console.url + "_dash-update-component"
        own_origin = console.url.rstrip("/")
        with httpx.Client(timeout=10) as raw:
            for body in (_old_attack("ks-confirm"), _kill_switch_post("ks-engage"), _kill_switch_post("ks-confirm")):
                resp = raw.post(url, json=body, headers={"Origin": own_origin})
                assert resp.status_code == 401, resp.text
            assert raw.post(url, json=_old_attack("ks-confirm"), headers={"Host": "evil.example"}).status_code == 400
        assert state.get(keys.KILL_SWITCH) is None and _audit(state) == []

        # A viewer sees the controls disabled; re-enabling the button in the page does not help.
        sign_in(browser, console, "bob", VIEWER_PASSWORD)
        assert "bob (viewer)" in _text_of(browser, "who")
        engage = browser.find_element(By.ID, "ks-engage")
        assert not engage.is_enabled()
        engage.click()  # a disabled button posts nothing
        # The viewer's own page posting the engage itself (session, CSRF token and Origin all genuine):
        # refused for the role, on the server.
        answer = browser.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const csrf = document.cookie.split('; ').find(c => c.startsWith('dreambot_csrf=')).split('=')[1];
            fetch('/_dash-update-component', {method: 'POST', body: JSON.stringify(arguments[0]),
                  headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}})
              .then(r => r.text().then(t => done(r.status + ' ' + t)), e => done('error ' + e));
        """, _kill_switch_post("ks-engage", "a viewer tries"))
        assert answer.startswith("200 ") and "viewers cannot engage" in answer, answer
        assert state.get(keys.KILL_SWITCH) is None
        _until(lambda: len(_audit(state)) == 1, "the viewer's refusal in the audit stream")
        assert [(e["user"], e["role"], e["outcome"]) for e in _audit(state)] == [("bob", "viewer", "refused")]

        # An operator: engage, confirmed on the server, audited; then release the same way.
        sign_in(browser, console, "alice", OPERATOR_PASSWORD)
        browser.find_element(By.ID, "ks-why").send_keys("spreads blew out")
        browser.find_element(By.ID, "ks-engage").click()
        WebDriverWait(browser, WAIT_S).until(lambda d: d.find_element(By.ID, "ks-confirm-bar").is_displayed())
        assert "“spreads blew out”" in _text_of(browser, "ks-prompt")
        assert state.get(keys.KILL_SWITCH) is None  # armed, not written
        browser.find_element(By.ID, "ks-confirm").click()
        _until(lambda: state.get(keys.KILL_SWITCH) is not None, "the engaged flag in Redis")
        flag = json.loads(state.get(keys.KILL_SWITCH) or b"")
        assert (flag["engaged"], flag["reason"], flag["source"]) == (True, "Manual", "console")
        audit_text = _wait_text(browser, "ks-audit", "spreads blew out", console=console)
        assert "alice (operator)" in audit_text and "written" in audit_text
        engaged_entry = _audit(state)[-1]
        assert (engaged_entry["user"], engaged_entry["action"], engaged_entry["outcome"], engaged_entry["why"],
                engaged_entry["ts"]) == ("alice", "engage", "written", "spreads blew out", flag["ts"])

        # Forged posts with alice's session: a foreign Origin, or no CSRF token, change nothing.
        cookies = {c["name"]: c["value"] for c in browser.get_cookies()}
        assert {"dreambot_session", "dreambot_csrf"} <= set(cookies)
        before = (state.get(keys.KILL_SWITCH), len(_audit(state)))
        jar = {"dreambot_session": cookies["dreambot_session"]}
        with httpx.Client(timeout=10, cookies=jar) as stolen:
            for button in ("ks-release", "ks-confirm"):
                for headers in ({"Origin": "http://evil.example", "X-CSRF-Token": cookies["dreambot_csrf"]},
                                {"X-CSRF-Token": cookies["dreambot_csrf"]},  # no Origin, no Referer
                                {"Origin": own_origin},  # no CSRF token
                                {"Origin": own_origin, "X-CSRF-Token": "forged-token"}):
                    resp = stolen.post(url, json=_kill_switch_post(button), headers=headers)
                    assert resp.status_code == 403, (button, headers, resp.text)
                    resp = stolen.post(url, json=_old_attack(button), headers=headers)
                    assert resp.status_code == 403, (button, headers, resp.text)
        assert (state.get(keys.KILL_SWITCH), len(_audit(state))) == before

        browser.find_element(By.ID, "ks-why").clear()
        browser.find_element(By.ID, "ks-why").send_keys("spreads normal again")
        browser.find_element(By.ID, "ks-release").click()
        WebDriverWait(browser, WAIT_S).until(lambda d: d.find_element(By.ID, "ks-confirm-bar").is_displayed())
        browser.find_element(By.ID, "ks-confirm").click()
        _until(lambda: not json.loads(state.get(keys.KILL_SWITCH) or b"{}").get("engaged", True),
               "the released flag in Redis")
        assert "released" in _wait_text(browser, "ks-status", "released")
        assert "spreads normal again" in _wait_text(browser, "ks-audit", "spreads normal again")

        # Risk engages for DailyLossLimit now: the console refuses to release it this session.
        dll = {"engaged": True, "reason": "DailyLossLimit", "ts": time.time_ns(), "source": "risk"}
        state.set(keys.KILL_SWITCH, json.dumps(dll).encode())
        assert "ENGAGED — DailyLossLimit" in _wait_text(browser, "ks-status", "DailyLossLimit")
        browser.find_element(By.ID, "ks-why").clear()
        browser.find_element(By.ID, "ks-why").send_keys("I want to keep trading")
        browser.find_element(By.ID, "ks-release").click()
        refusal = _wait_text(browser, "ks-result", "the console can release it from the next session")
        assert "nothing was written" in refusal
        assert not browser.find_element(By.ID, "ks-confirm-bar").is_displayed()
        # Confirm with nothing armed (the bar forced visible) writes nothing either.
        browser.execute_script("document.getElementById('ks-confirm-bar').style.display = 'block';")
        browser.find_element(By.ID, "ks-confirm").click()
        assert "Nothing to confirm" in _wait_text(browser, "ks-result", "Nothing to confirm")
        assert json.loads(state.get(keys.KILL_SWITCH) or b"") == dll
        last = _audit(state)[-1]
        assert (last["action"], last["outcome"], last["reason"]) == ("release", "refused", "DailyLossLimit")

        # Signing out ends the session: the old cookie no longer reaches the page.
        browser.find_element(By.ID, "sign-out").click()
        WebDriverWait(browser, WAIT_S).until(lambda d: "/login" in d.current_url)
        with httpx.Client(timeout=10, cookies=jar, follow_redirects=False) as stale:
            assert stale.get(console.url, headers={"Accept": "text/html"}).status_code == 302
        assert console.proc.poll() is None, console.log()
    finally:
        console.close()
        state.close()
