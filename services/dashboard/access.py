"""Console access control, the web part: every request to the console's Flask server passes
:class:`AccessGuard` before Dash sees it.

In order, for every request:

1. **Host**: the Host header must name an allowed host, else 400 (no DNS rebinding).
2. **Origin**: a state-changing request (anything but GET/HEAD/OPTIONS — Dash's
   ``/_dash-update-component`` is a POST) must come from the console's own origin or a trusted one,
   else 403.
   ``/login`` (the sign-in form) and ``/readyz`` (``ok``, for probes and ``dreambot services up``)
   are the only paths open without a session.
3. **Who**: a valid session cookie (:class:`~services.dashboard.auth.SessionSigner`), or — only when
   configured and only from a trusted proxy address — the proxy's user header (an OIDC proxy such as
   oauth2-proxy), which then gets a session of its own. Without either, a GET is sent to ``/login``
   and anything else is answered 401.
4. **CSRF**: a state-changing request must carry the session's CSRF token (header ``X-CSRF-Token``,
   which Dash's renderer sends from the ``dreambot_csrf`` cookie, or a ``csrf`` form field), else 403.

The actor (:class:`~services.dashboard.auth.Actor`, role looked up now) is then in ``flask.g`` for the
callbacks (:func:`current_actor`). Refusals are logged (method, path, client, why) — never a cookie,
token or password. Every answer carries anti-framing and no-sniff headers, so the kill switch cannot
be clicked through another site's frame.
"""

from __future__ import annotations

import html
import ipaddress
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote, urlsplit

import flask
from werkzeug.wrappers import Response

from services.dashboard.auth import (
    Actor,
    LoginThrottle,
    Role,
    SessionClaims,
    SessionSigner,
    UserDirectory,
    host_allowed,
    origin_allowed,
)

log = logging.getLogger("dreambot.dashboard.access")

SESSION_COOKIE: Final = "dreambot_session"
CSRF_COOKIE: Final = "dreambot_csrf"
LOGIN_COOKIE: Final = "dreambot_login"
CSRF_HEADER: Final = "X-CSRF-Token"
CSRF_FIELD: Final = "csrf"
LOGIN_PATH: Final = "/login"
LOGOUT_PATH: Final = "/logout"
READY_PATH: Final = "/readyz"  # open to all (after the Host check): says "ok", nothing else
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_TTL_S: Final = 600
_G_ACTOR: Final = "dreambot_actor"
_G_NEW_SESSION: Final = "dreambot_new_session"

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SECURITY_HEADERS: Final[dict[str, str]] = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@dataclass(frozen=True)
class ProxyLogin:
    """Trust an authenticating proxy's user header (e.g. oauth2-proxy's ``X-Forwarded-Email``).

    header: the request header naming the user. trusted: peer addresses the header is believed from
    (everyone else's copy of the header is ignored). default_role: the role of a proxied user who is
    not in the user list (None: such users are refused).
    """

    header: str
    trusted: tuple[IpNetwork, ...]
    default_role: Role | None = None

    def from_trusted_peer(self, remote_addr: str | None) -> bool:
        try:
            peer = ipaddress.ip_address((remote_addr or "").split("%", 1)[0])
        except ValueError:
            return False
        return any(peer in net for net in self.trusted)


@dataclass
class AccessPolicy:
    """Everything the guard decides with."""

    users: UserDirectory
    signer: SessionSigner
    allowed_hosts: tuple[str, ...]
    trusted_origins: tuple[str, ...] = ()
    cookie_secure: bool = False
    proxy: ProxyLogin | None = None
    throttle: LoginThrottle = field(default_factory=LoginThrottle)


def current_actor() -> Actor | None:
    """The signed-in actor of the current request (None outside a request or before the guard)."""
    if not flask.has_request_context():
        return None
    actor = flask.g.get(_G_ACTOR)
    return actor if isinstance(actor, Actor) else None


def _refuse(status: int, why: str) -> Response:
    req = flask.request
    # A signed-out browser's stray fetch (favicon, a refresh after expiry) is routine; anything else
    # (wrong Host, foreign Origin, bad CSRF token, signed-out POST) is worth a warning.
    level = logging.INFO if status == 401 and req.method in SAFE_METHODS else logging.WARNING
    log.log(level, "console request refused", extra={
        "status": status, "method": req.method, "path": req.path[:200], "client": req.remote_addr or "?",
        "why": why})
    return Response(f"{why}\n", status=status, mimetype="text/plain")


_LOGIN_PAGE: Final = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title} · sign in</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #f4f5f7; color: #1d2430; }}
form {{ max-width: 320px; margin: 12vh auto; background: #fff; padding: 20px 24px; border-radius: 6px;
        box-shadow: 0 1px 2px rgba(0,0,0,.08); }}
h1 {{ font-size: 18px; margin: 0 0 14px; }} label {{ display: block; font-size: 13px; margin-top: 10px; }}
input[type=text], input[type=password] {{ width: 100%; box-sizing: border-box; padding: 6px; font-size: 14px; }}
button {{ margin-top: 16px; padding: 6px 14px; font-size: 14px; }}
.error {{ color: #b00020; font-size: 13px; margin-top: 10px; }}
</style></head>
<body><form method="post" action="{action}" id="login-form">
<h1>{title}</h1>
<label for="login-user">User</label><input type="text" id="login-user" name="user" autocomplete="username" autofocus>
<label for="login-password">Password</label>
<input type="password" id="login-password" name="password" autocomplete="current-password">
<input type="hidden" name="{csrf_field}" value="{token}">
<button type="submit" id="login-submit">Sign in</button>
<div class="error" id="login-error">{error}</div>
</form></body></html>"""


class AccessGuard:
    """Installs the checks, ``/login`` and ``/logout`` on a Flask server."""

    def __init__(self, policy: AccessPolicy, title: str) -> None:
        self.policy = policy
        self.title = title

    def install(self, server: flask.Flask) -> None:
        server.before_request(self._before)
        server.after_request(self._after)
        server.add_url_rule(LOGIN_PATH, "dreambot_login", self._login, methods=["GET", "POST"])
        server.add_url_rule(LOGOUT_PATH, "dreambot_logout", self._logout, methods=["POST"])
        server.add_url_rule(READY_PATH, "dreambot_readyz", self._ready, methods=["GET"])

    # -- the checks ---------------------------------------------------------------------------------

    def _before(self) -> Response | None:
        req = flask.request
        p = self.policy
        if not host_allowed(req.headers.get("Host"), p.allowed_hosts):
            return _refuse(400, "unknown Host header (set DREAMBOT_CONSOLE_ALLOWED_HOSTS)")
        unsafe = req.method not in SAFE_METHODS
        if unsafe and not origin_allowed(req.headers.get("Origin"), req.headers.get("Referer"),
                                         req.headers.get("Host"), p.trusted_origins):
            return _refuse(403, "cross-origin request refused (Origin is not this console)")
        if req.path in (LOGIN_PATH, READY_PATH):
            return None
        actor = self._identify()
        if isinstance(actor, Response):
            return actor
        if actor is None:
            if unsafe or "text/html" not in req.headers.get("Accept", ""):
                return _refuse(401, "sign in first")  # only a page load is sent to the sign-in form
            target = req.full_path if req.query_string else req.path
            return flask.redirect(f"{LOGIN_PATH}?next={quote(target, safe='/')}", code=302)
        if unsafe:
            token = req.headers.get(CSRF_HEADER) or req.form.get(CSRF_FIELD)
            if not p.signer.check_csrf(actor.sid, token):
                return _refuse(403, "missing or wrong CSRF token")
        flask.g.setdefault(_G_ACTOR, actor)
        return None

    def _identify(self) -> Actor | Response | None:
        """The actor of this request: from the proxy header (trusted peers only) or the session cookie."""
        req = flask.request
        p = self.policy
        claims = p.signer.verify(req.cookies.get(SESSION_COOKIE))
        proxied = None
        if p.proxy is not None and p.proxy.from_trusted_peer(req.remote_addr):
            proxied = (req.headers.get(p.proxy.header) or "").strip() or None
        if proxied is not None and p.proxy is not None:
            user = p.users.get(proxied)
            role = user.role if user is not None else p.proxy.default_role
            if role is None:
                return _refuse(403, "this user is not allowed on the console")
            if claims is None or claims.user != proxied or claims.method != "proxy":
                if req.method not in SAFE_METHODS:
                    return None  # a new proxied session starts with a page load, never with an action
                cookie, claims = p.signer.issue(proxied, "proxy")
                flask.g.setdefault(_G_NEW_SESSION, (cookie, claims))
                log.info("console sign-in", extra={"user": proxied, "role": role, "method": "proxy",
                                                   "client": req.remote_addr or "?"})
            return Actor(proxied, role, claims.sid)
        if claims is None or claims.method != "password":
            return None  # a proxy session is only good together with the proxy's header
        user = p.users.get(claims.user)
        if user is None or user.password is None:
            return None
        return Actor(user.name, user.role, claims.sid)

    def _after(self, response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        new = flask.g.get(_G_NEW_SESSION)
        if isinstance(new, tuple):
            cookie, claims = new
            self._set_session(response, cookie, claims)
        return response

    def _set_session(self, response: Response, cookie: str, claims: SessionClaims) -> None:
        max_age = max(1, claims.expires_s - claims.issued_s)
        secure = self.policy.cookie_secure
        response.set_cookie(SESSION_COOKIE, cookie, max_age=max_age, httponly=True, samesite="Strict",
                            secure=secure, path="/")
        # Readable by the page on purpose: Dash's renderer echoes it as the X-CSRF-Token header.
        response.set_cookie(CSRF_COOKIE, self.policy.signer.csrf_token(claims.sid), max_age=max_age,
                            httponly=False, samesite="Strict", secure=secure, path="/")

    # -- /login, /logout and /readyz ----------------------------------------------------------------

    @staticmethod
    def _ready() -> Response:
        return Response("ok\n", status=200, mimetype="text/plain")

    def _login_page(self, error: str = "", status: int = 200) -> Response:
        # Keep a login cookie the browser already has, so two sign-in pages open at once both work.
        nonce = flask.request.cookies.get(LOGIN_COOKIE) or ""
        if not 16 <= len(nonce) <= 64:
            nonce = secrets.token_urlsafe(24)
        page = _LOGIN_PAGE.format(
            title=html.escape(self.title), action=html.escape(flask.request.full_path.rstrip("?")),
            csrf_field=CSRF_FIELD, token=html.escape(self.policy.signer.login_token(nonce)),
            error=html.escape(error))
        response = Response(page, status=status, mimetype="text/html")
        response.headers["Cache-Control"] = "no-store"
        response.set_cookie(LOGIN_COOKIE, nonce, max_age=LOGIN_TTL_S, httponly=True, samesite="Strict",
                            secure=self.policy.cookie_secure, path=LOGIN_PATH)
        return response

    @staticmethod
    def _next_url() -> str:
        target = flask.request.args.get("next", "/")
        parts = urlsplit(target)
        if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
            return "/"
        return target

    def _login(self) -> Response:
        req = flask.request
        p = self.policy
        if req.method == "GET":
            return self._login_page()
        if not p.signer.check_login_token(req.cookies.get(LOGIN_COOKIE), req.form.get(CSRF_FIELD)):
            log.warning("console sign-in refused", extra={"why": "stale or missing login token",
                                                          "client": req.remote_addr or "?"})
            return self._login_page("The sign-in form expired; try again.", 403)
        name = (req.form.get("user") or "").strip()[:128]
        password = req.form.get("password") or ""
        client = f"client:{req.remote_addr or '?'}"
        if p.throttle.blocked(f"user:{name}", client):
            log.warning("console sign-in refused", extra={"user": name, "why": "too many failures",
                                                          "client": req.remote_addr or "?"})
            return self._login_page("Too many failed sign-ins; wait a few minutes.", 429)
        user = p.users.authenticate(name, password)
        if user is None:
            p.throttle.failure(f"user:{name}", client)
            log.warning("console sign-in refused", extra={"user": name, "why": "wrong user or password",
                                                          "client": req.remote_addr or "?"})
            return self._login_page("Wrong user or password.", 401)
        p.throttle.success(f"user:{name}")
        cookie, claims = p.signer.issue(user.name, "password")
        log.info("console sign-in", extra={"user": user.name, "role": user.role, "method": "password",
                                           "client": req.remote_addr or "?"})
        response = flask.redirect(self._next_url(), code=303)
        self._set_session(response, cookie, claims)
        response.delete_cookie(LOGIN_COOKIE, path=LOGIN_PATH)
        return response

    def _logout(self) -> Response:
        claims = self.policy.signer.verify(flask.request.cookies.get(SESSION_COOKIE))
        if claims is not None:
            self.policy.signer.revoke(claims)
            log.info("console sign-out", extra={"user": claims.user})
        response = flask.redirect(LOGIN_PATH, code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        response.delete_cookie(CSRF_COOKIE, path="/")
        return response


def parse_networks(items: Sequence[str]) -> tuple[IpNetwork, ...]:
    """CIDRs (or bare addresses) as networks; raises ValueError naming the bad one."""
    out: list[IpNetwork] = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{item.strip()[:60]!r} is not an address or CIDR") from None
    return tuple(out)
