"""The access guard on the real console app (Flask test client, MemoryState): sign-in, Host, Origin
and CSRF checks on Dash's own endpoints, sign-out, the proxy header, and what a refusal leaves behind
(nothing in the store)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from services.core import keys
from services.core.state import MemoryState
from services.dashboard.access import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    AccessGuard,
    AccessPolicy,
    ProxyLogin,
    parse_networks,
)
from services.dashboard.app import Console, ConsoleConfig, build_app
from services.dashboard.auth import LoginThrottle, SessionSigner, UserDirectory, hash_password
from services.dashboard.sources import PrometheusSource, SessionSource

PASSWORD = "correct horse battery"
HASH = hash_password(PASSWORD, log2_n=10)
ORIGIN = {"Origin": "http://localhost"}
KS_OUTPUTS = [("ks-confirm-bar", "style"), ("ks-prompt", "children"), ("ks-result", "children"),
              ("ks-written", "data")]
KS_OUTPUT = ".." + "...".join(f"{i}.{p}" for i, p in KS_OUTPUTS) + ".."


def _app(store: MemoryState, proxy: ProxyLogin | None = None) -> Any:
    users = UserDirectory.parse(f"alice:operator:{HASH}\nbob:viewer:{HASH}\nsso@example.com:operator:-")
    policy = AccessPolicy(users, SessionSigner(b"k" * 32, 3600), ("localhost",), proxy=proxy,
                          throttle=LoginThrottle(max_failures=3, window_s=60))
    console = Console(ConsoleConfig("paper-1"), SessionSource(store, clock_ns=lambda: 1_795_581_980_000_000_000),
                      PrometheusSource(""), clock_ns=lambda: 1_795_581_980_000_000_000)
    return build_app(console, AccessGuard(policy, "DreamBot · paper-1"))


@pytest.fixture
def store() -> MemoryState:
    return MemoryState("paper-1")


@pytest.fixture
def client(store: MemoryState) -> FlaskClient:
    return _app(store).server.test_client()


def _login_token(client: FlaskClient) -> str:
    page = client.get("/login").get_data(as_text=True)
    return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def _login(client: FlaskClient, user: str, password: str = PASSWORD) -> Any:
    return client.post("/login", data={"user": user, "password": password, "csrf": _login_token(client)},
                       headers=ORIGIN)


def _csrf(client: FlaskClient) -> str:
    cookie = client.get_cookie(CSRF_COOKIE)
    assert cookie is not None
    return str(cookie.value)


def _press(client: FlaskClient, button: str, why: str | None = "unit test", headers: dict[str, str] | None = None,
           claim_pending: bool = False) -> Any:
    clicks = {b: (1 if b == button else 0) for b in ("ks-engage", "ks-release", "ks-confirm", "ks-cancel")}
    state = [{"id": "ks-why", "property": "value", "value": why},
             {"id": "ks-written", "property": "data", "value": None}]
    if claim_pending:  # what the old console trusted: the client saying "engage is pending"
        state.insert(1, {"id": "ks-pending", "property": "data", "value": "engage"})
    body = {"output": KS_OUTPUT, "outputs": [{"id": i, "property": p} for i, p in KS_OUTPUTS],
            "inputs": [{"id": b, "property": "n_clicks", "value": n} for b, n in clicks.items()],
            "changedPropIds": [f"{button}.n_clicks"], "state": state}
    return client.post("/_dash-update-component", json=body, headers=headers or {})


def test_every_page_and_dash_endpoint_needs_a_session(client: FlaskClient, store: MemoryState) -> None:
    page_load = {"Accept": "text/html,application/xhtml+xml"}
    for path in ("/", "/_dash-layout", "/_dash-dependencies", "/anything"):
        resp = client.get(path, headers=page_load)
        assert resp.status_code == 302 and resp.headers["Location"].startswith("/login?next="), path
        assert client.get(path).status_code == 401, path  # not a page load (fetch, favicon): no redirect
    resp = _press(client, "ks-confirm", headers=ORIGIN)
    assert resp.status_code == 401
    assert store.get(keys.KILL_SWITCH) is None and store.read(keys.KILL_SWITCH_AUDIT) == []
    ready = client.get("/readyz")
    assert (ready.status_code, ready.get_data(as_text=True)) == (200, "ok\n")
    assert client.post("/readyz", headers=ORIGIN).status_code == 405
    page = client.get("/login")
    assert page.status_code == 200 and 'id="login-password"' in page.get_data(as_text=True)
    assert page.headers["X-Frame-Options"] == "DENY" and "frame-ancestors 'none'" in page.headers[
        "Content-Security-Policy"]


def test_an_unknown_host_is_refused(client: FlaskClient) -> None:
    assert client.get("/login", headers={"Host": "evil.example"}).status_code == 400
    assert client.get("/login", headers={"Host": "localhost:8050"}).status_code == 200


def test_sign_in_checks_password_form_token_origin_and_throttles(client: FlaskClient) -> None:
    assert _login(client, "alice", "wrong").status_code == 401
    assert client.get_cookie(SESSION_COOKIE) is None
    token = _login_token(client)
    stale = client.post("/login", data={"user": "alice", "password": PASSWORD, "csrf": token + "x"}, headers=ORIGIN)
    assert stale.status_code == 403
    foreign = client.post("/login", data={"user": "alice", "password": PASSWORD, "csrf": _login_token(client)},
                          headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403 and client.get_cookie(SESSION_COOKIE) is None
    ok = _login(client, "alice")
    assert ok.status_code == 303 and ok.headers["Location"] == "/"
    cookies = "\n".join(ok.headers.getlist("Set-Cookie"))
    assert "dreambot_session=" in cookies and "HttpOnly" in cookies.split("dreambot_session=")[1].split("\n")[0]
    assert "SameSite=Strict" in cookies
    assert client.get("/").status_code == 200
    # Three failures lock the name out, even with the right password afterwards.
    other = _app(MemoryState("paper-1")).server.test_client()
    for _ in range(3):
        assert _login(other, "bob", "nope").status_code == 401
    assert _login(other, "bob").status_code == 429


def test_next_never_leaves_the_console(client: FlaskClient) -> None:
    cases = (("//evil.example/x", "/"), ("https://evil.example/", "/"), ("/_dash-layout", "/_dash-layout"))
    for target, where in cases:
        resp = client.post(f"/login?next={target}", data={"user": "alice", "password": PASSWORD,
                                                          "csrf": _login_token(client)}, headers=ORIGIN)
        assert resp.headers["Location"] == where


def test_forged_update_component_posts_change_nothing(client: FlaskClient, store: MemoryState) -> None:
    _login(client, "alice")
    csrf = _csrf(client)
    good = {"Origin": "http://localhost", "X-CSRF-Token": csrf}
    forged: list[tuple[str, dict[str, str], int]] = [
        ("foreign origin", {"Origin": "http://evil.example", "X-CSRF-Token": csrf}, 403),
        ("no origin", {"X-CSRF-Token": csrf}, 403),
        ("no csrf", {"Origin": "http://localhost"}, 403),
        ("wrong csrf", {"Origin": "http://localhost", "X-CSRF-Token": csrf[:-3] + "AAA"}, 403),
    ]
    for button in ("ks-engage", "ks-confirm"):
        for what, headers, status in forged:
            assert _press(client, button, headers=headers).status_code == status, what
            assert _press(client, button, headers=headers, claim_pending=True).status_code == status, what
    assert store.get(keys.KILL_SWITCH) is None and store.read(keys.KILL_SWITCH_AUDIT) == []
    # A confirm with nothing armed on the server does nothing, whatever the client claims is pending.
    stray = _press(client, "ks-confirm", headers=good)
    assert stray.status_code == 200 and "Nothing to confirm" in stray.get_data(as_text=True)
    assert _press(client, "ks-confirm", headers=good, claim_pending=True).status_code >= 400
    assert store.get(keys.KILL_SWITCH) is None
    # The genuine sequence works.
    assert _press(client, "ks-engage", headers=good).status_code == 200
    assert _press(client, "ks-confirm", headers=good).status_code == 200
    assert json.loads(store.get(keys.KILL_SWITCH) or b"")["engaged"] is True


def test_a_csrf_token_of_another_session_is_refused(store: MemoryState) -> None:
    app = _app(store)
    one, two = app.server.test_client(), app.server.test_client()
    _login(one, "alice")
    _login(two, "alice")
    assert _press(one, "ks-engage", headers={**ORIGIN, "X-CSRF-Token": _csrf(two)}).status_code == 403


def test_a_viewer_is_refused_and_audited(client: FlaskClient, store: MemoryState) -> None:
    _login(client, "bob")
    headers = {**ORIGIN, "X-CSRF-Token": _csrf(client)}
    resp = _press(client, "ks-engage", headers=headers)
    assert resp.status_code == 200 and "viewers cannot engage" in resp.get_data(as_text=True)
    assert "Nothing to confirm" in _press(client, "ks-confirm", headers=headers).get_data(as_text=True)
    assert store.get(keys.KILL_SWITCH) is None
    [entry] = [json.loads(raw) for raw in store.read(keys.KILL_SWITCH_AUDIT)]
    assert (entry["user"], entry["outcome"]) == ("bob", "refused")


def test_sign_out_ends_the_session(client: FlaskClient) -> None:
    _login(client, "alice")
    cookie = client.get_cookie(SESSION_COOKIE)
    assert cookie is not None
    stolen = cookie.value
    assert client.post("/logout", headers=ORIGIN).status_code == 403  # the form carries the CSRF token
    out = client.post("/logout", data={"csrf": _csrf(client)}, headers=ORIGIN)
    assert out.status_code == 303 and out.headers["Location"] == "/login"
    client.set_cookie(SESSION_COOKIE, stolen)
    assert client.get("/").status_code == 401  # the old cookie is refused after sign-out


def test_the_proxy_header_is_trusted_only_from_trusted_peers(store: MemoryState) -> None:
    proxy = ProxyLogin("X-Forwarded-Email", parse_networks(["127.0.0.1/32"]), default_role=None)
    app = _app(store, proxy)
    via_proxy: Callable[[str], dict[str, Any]] = lambda user: {  # noqa: E731
        "headers": {"X-Forwarded-Email": user}, "environ_base": {"REMOTE_ADDR": "127.0.0.1"}}
    c = app.server.test_client()
    page = c.get("/_dash-layout", **via_proxy("sso@example.com"))
    assert page.status_code == 200 and "signed in as sso@example.com (operator)" in page.get_data(as_text=True)
    assert c.get_cookie(SESSION_COOKIE) is not None and c.get_cookie(CSRF_COOKIE) is not None
    headers = {**ORIGIN, "X-CSRF-Token": _csrf(c), "X-Forwarded-Email": "sso@example.com"}
    assert _press(c, "ks-engage", headers=headers, why="via sso").status_code == 200
    # The proxy session is no good without the proxy's header.
    bare = {**ORIGIN, "X-CSRF-Token": _csrf(c)}
    assert _press(c, "ks-confirm", headers=bare).status_code == 401
    # A header from anyone else is ignored; an unknown user through the proxy is refused.
    outsider = app.server.test_client()
    assert outsider.get("/", headers={"X-Forwarded-Email": "sso@example.com"},
                        environ_base={"REMOTE_ADDR": "10.0.0.9"}).status_code == 401
    assert outsider.get("/", **via_proxy("stranger@example.com")).status_code == 403
    assert store.get(keys.KILL_SWITCH) is None
