"""Console access control, the pure part: password hashes, users and roles, signed sessions, CSRF
tokens, Host/Origin rules and a login throttle. :mod:`services.dashboard.access` wires them into the
console's web server; nothing here touches a request.

- **Passwords** are scrypt hashes (``hashlib.scrypt``) written ``scrypt$<log2 N>$<r>$<p>$<salt>$<key>``
  (salt and key base64url without padding). ``python -m services.dashboard.auth hash-password --user
  alice --role operator`` reads a password from stdin (or prompts) and prints the user entry.
- **Users** are entries ``name:role:hash`` separated by newlines or ``;`` (``DREAMBOT_CONSOLE_USERS``).
  ``role`` is ``viewer`` (sees everything, changes nothing) or ``operator`` (may engage and release the
  kill switch). A hash of ``-`` means the user may only arrive through the trusted proxy header.
- **Sessions** are a signed cookie ``<payload>.<hmac>``: the payload names the user, a random session
  id, when it was issued and when it expires; the signature is HMAC-SHA256 under a key derived from
  the console's session key. The role is looked up in the user list on every request, never taken
  from the cookie; a signed-out session id is refused until it would have expired anyway.
- **CSRF**: the token is HMAC(session id), so it cannot be reused with another session. Dash's
  renderer reads it from a script-readable cookie and echoes it in a header on every callback; the
  server compares the header with the token of the session cookie (double submit, bound to the
  session). The login form carries a token bound to a short-lived login cookie the same way.
- **Host/Origin**: a request's Host must be one of the allowed hosts (DNS rebinding), and every
  state-changing request must carry an Origin (or, without one, a Referer) that is the request's own
  host or a configured trusted origin.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import json
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Literal, get_args
from urllib.parse import urlsplit

Role = Literal["viewer", "operator"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)
VIEWER: Final[Role] = "viewer"
OPERATOR: Final[Role] = "operator"
LoginMethod = Literal["password", "proxy"]

SCHEME: Final = "scrypt"
DEFAULT_LOG2_N: Final = 15  # N = 32768, r = 8: 32 MiB and about 0.1 s per hash
DEFAULT_R: Final = 8
DEFAULT_P: Final = 1
NO_PASSWORD: Final = "-"
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
_MAX_MEM: Final = 256 * 1024 * 1024


class AuthConfigError(ValueError):
    """A user entry, hash or key is malformed; the message names the entry, never a secret."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- passwords -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A parsed scrypt hash."""

    log2_n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    @classmethod
    def parse(cls, encoded: str) -> PasswordHash:
        parts = encoded.strip().split("$")
        if len(parts) != 6 or parts[0] != SCHEME:
            raise AuthConfigError("a password hash must look like scrypt$<log2 N>$<r>$<p>$<salt>$<key>")
        try:
            log2_n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            salt, key = _unb64(parts[4]), _unb64(parts[5])
        except ValueError:
            raise AuthConfigError("a password hash has a non-numeric cost or bad base64") from None
        if not (10 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
            raise AuthConfigError("a password hash's cost is outside log2 N 10..20, r 1..32, p 1..16")
        if len(salt) < 16 or len(key) < 32:
            raise AuthConfigError("a password hash needs a salt of at least 16 bytes and a key of 32")
        return cls(log2_n, r, p, salt, key)

    def derive(self, password: str) -> bytes:
        return hashlib.scrypt(password.encode("utf-8"), salt=self.salt, n=1 << self.log2_n, r=self.r,
                              p=self.p, maxmem=_MAX_MEM, dklen=len(self.key))

    def matches(self, password: str) -> bool:
        return hmac.compare_digest(self.derive(password), self.key)

    def encode(self) -> str:
        return f"{SCHEME}${self.log2_n}${self.r}${self.p}${_b64(self.salt)}${_b64(self.key)}"


def hash_password(password: str, *, log2_n: int = DEFAULT_LOG2_N, r: int = DEFAULT_R, p: int = DEFAULT_P,
                  salt: bytes | None = None) -> str:
    """The scrypt hash of ``password`` with a fresh 16-byte salt (or ``salt``)."""
    if not password:
        raise AuthConfigError("the password is empty")
    spec = PasswordHash(log2_n, r, p, salt if salt is not None else secrets.token_bytes(16), b"\0" * 32)
    return PasswordHash(log2_n, r, p, spec.salt, spec.derive(password)).encode()


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches the scrypt hash ``encoded`` (constant-time comparison)."""
    return PasswordHash.parse(encoded).matches(password)


# --- users -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class User:
    """A console user: name, role, and the password hash (None: proxy header only)."""

    name: str
    role: Role
    password: PasswordHash | None

    @property
    def can_act(self) -> bool:
        return self.role == OPERATOR


def parse_role(text: str, where: str) -> Role:
    for role in ROLES:
        if text == role:
            return role
    raise AuthConfigError(f"{where}: role must be viewer or operator, not {text[:20]!r}")


class UserDirectory:
    """The console's users by name."""

    def __init__(self, users: Iterable[User]) -> None:
        self._users: dict[str, User] = {}
        for user in users:
            if user.name in self._users:
                raise AuthConfigError(f"user {user.name!r} is listed twice")
            self._users[user.name] = user
        # A wrong name costs the same scrypt work as a wrong password.
        self._dummy = PasswordHash(DEFAULT_LOG2_N, DEFAULT_R, DEFAULT_P, b"\0" * 16, b"\0" * 32)
        for user in self._users.values():
            if user.password is not None:
                self._dummy = PasswordHash(user.password.log2_n, user.password.r, user.password.p,
                                           b"\0" * 16, b"\0" * 32)
                break

    @classmethod
    def parse(cls, text: str) -> UserDirectory:
        """Entries ``name:role:hash`` separated by newlines or ``;`` (blank entries ignored)."""
        users: list[User] = []
        for index, raw in enumerate(re.split(r"[;\n]", text), start=1):
            entry = raw.strip()
            if not entry:
                continue
            fields = entry.split(":", 2)
            if len(fields) != 3:
                raise AuthConfigError(f"user entry {index}: expected name:role:hash")
            name, role, encoded = (f.strip() for f in fields)
            if not USER_NAME.match(name):
                raise AuthConfigError(f"user entry {index}: the name must be 1-128 of A-Z a-z 0-9 . _ @ + -")
            try:
                password = None if encoded == NO_PASSWORD else PasswordHash.parse(encoded)
            except AuthConfigError as exc:
                raise AuthConfigError(f"user {name!r}: {exc}") from None
            users.append(User(name, parse_role(role, f"user {name!r}"), password))
        return cls(users)

    def __len__(self) -> int:
        return len(self._users)

    def __iter__(self) -> Iterator[User]:
        return iter(self._users.values())

    def __contains__(self, name: object) -> bool:
        return name in self._users

    def get(self, name: str) -> User | None:
        return self._users.get(name)

    def authenticate(self, name: str, password: str) -> User | None:
        """The user when ``password`` is theirs; None otherwise (same work either way)."""
        user = self._users.get(name)
        if user is None or user.password is None or not password:
            self._dummy.matches(password or "x")
            return None
        return user if user.password.matches(password) else None


# --- sessions and tokens ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionClaims:
    """What a session cookie says: who, which session, when it was issued and when it expires (unix s)."""

    user: str
    sid: str
    issued_s: int
    expires_s: int
    method: LoginMethod


@dataclass(frozen=True, slots=True)
class Actor:
    """The person behind one request: name, role (looked up now) and session id."""

    name: str
    role: Role
    sid: str

    @property
    def can_act(self) -> bool:
        return self.role == OPERATOR


class SessionSigner:
    """Issues and checks session cookies, CSRF tokens and login-form tokens under one key.

    key: the session key (at least 32 bytes); sub-keys for sessions, CSRF and login are derived
        from it, so no token of one kind passes as another.
    ttl_s: a session's lifetime from login (absolute, not sliding).
    clock_s: wall clock in unix seconds (tests inject one).
    """

    def __init__(self, key: bytes, ttl_s: float, clock_s: Callable[[], float] = time.time) -> None:
        if len(key) < 32:
            raise AuthConfigError("the session key must be at least 32 bytes")
        if ttl_s <= 0:
            raise AuthConfigError("the session lifetime must be positive")
        self._session_key = hmac.digest(key, b"dreambot-console session", "sha256")
        self._csrf_key = hmac.digest(key, b"dreambot-console csrf", "sha256")
        self._login_key = hmac.digest(key, b"dreambot-console login", "sha256")
        self.ttl_s = ttl_s
        self.clock_s = clock_s
        self._revoked: dict[str, int] = {}
        self._lock = threading.Lock()

    def _sign(self, payload: str) -> str:
        return _b64(hmac.digest(self._session_key, payload.encode("ascii"), "sha256"))

    def issue(self, user: str, method: LoginMethod) -> tuple[str, SessionClaims]:
        """A new session for ``user``: the cookie value and its claims."""
        now = int(self.clock_s())
        claims = SessionClaims(user, secrets.token_hex(16), now, now + int(self.ttl_s), method)
        doc = {"u": claims.user, "sid": claims.sid, "iat": claims.issued_s, "exp": claims.expires_s,
               "m": claims.method}
        payload = _b64(json.dumps(doc, separators=(",", ":")).encode("utf-8"))
        return f"{payload}.{self._sign(payload)}", claims

    def verify(self, cookie: str | None) -> SessionClaims | None:
        """The claims of a genuine, unexpired, not signed-out session cookie; None otherwise."""
        if not cookie or len(cookie) > 4096 or cookie.count(".") != 1:
            return None
        payload, signature = cookie.split(".")
        if not hmac.compare_digest(self._sign(payload), signature):
            return None
        try:
            doc = json.loads(_unb64(payload))
        except ValueError:
            return None
        if not isinstance(doc, dict):
            return None
        user, sid, iat, exp, method = doc.get("u"), doc.get("sid"), doc.get("iat"), doc.get("exp"), doc.get("m")
        if not (isinstance(user, str) and isinstance(sid, str) and type(iat) is int and type(exp) is int):
            return None
        if method not in ("password", "proxy"):
            return None
        now = self.clock_s()
        if not iat - 60 <= now < exp or exp - iat > self.ttl_s:
            return None
        with self._lock:
            if sid in self._revoked:
                return None
        return SessionClaims(user, sid, iat, exp, "password" if method == "password" else "proxy")

    def revoke(self, claims: SessionClaims) -> None:
        """Sign a session out: its cookie is refused from now on (remembered until it expires)."""
        now = int(self.clock_s())
        with self._lock:
            self._revoked = {sid: exp for sid, exp in self._revoked.items() if exp > now}
            self._revoked[claims.sid] = claims.expires_s

    def csrf_token(self, sid: str) -> str:
        """The CSRF token of session ``sid``."""
        return _b64(hmac.digest(self._csrf_key, sid.encode("ascii"), "sha256"))

    def check_csrf(self, sid: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token(sid), str(token))

    def login_token(self, nonce: str) -> str:
        """The login form's token for the login cookie ``nonce``."""
        return _b64(hmac.digest(self._login_key, nonce.encode("utf-8"), "sha256"))

    def check_login_token(self, nonce: str | None, token: str | None) -> bool:
        return bool(nonce) and bool(token) and hmac.compare_digest(self.login_token(str(nonce)), str(token))


class LoginThrottle:
    """Refuses logins for a key (user name, client address) after ``max_failures`` failures within
    ``window_s`` seconds, until the oldest of them is older than the window."""

    def __init__(self, max_failures: int = 5, window_s: float = 300.0,
                 clock_s: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock_s = clock_s
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> list[float]:
        kept = [t for t in self._failures.get(key, []) if now - t < self.window_s]
        if kept:
            self._failures[key] = kept
        else:
            self._failures.pop(key, None)
        return kept

    def blocked(self, *keys: str) -> bool:
        now = self.clock_s()
        with self._lock:
            return any(len(self._recent(k, now)) >= self.max_failures for k in keys)

    def failure(self, *keys: str) -> None:
        now = self.clock_s()
        with self._lock:
            for k in keys:
                self._failures[k] = [*self._recent(k, now), now]

    def success(self, *keys: str) -> None:
        with self._lock:
            for k in keys:
                self._failures.pop(k, None)


# --- Host and Origin -------------------------------------------------------------------------------


def host_name(host_header: str) -> str:
    """The host of a Host header without its port, lower-cased (``[::1]:8050`` -> ``::1``)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else ""
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host_header: str | None, allowed: Sequence[str]) -> bool:
    """True when the Host header names one of ``allowed`` (host names, any port; ``*`` allows all)."""
    if not host_header:
        return False
    if "*" in allowed:
        return True
    return host_name(host_header) in {a.strip().lower().strip("[]") for a in allowed}


def _origin_of(url: str) -> tuple[str, str] | None:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        return None
    return parts.scheme, parts.netloc.lower()


def origin_allowed(origin: str | None, referer: str | None, host_header: str | None,
                   trusted: Sequence[str]) -> bool:
    """True when a state-changing request comes from the console's own pages: its Origin (or, when
    the browser sent none, its Referer) is ``http(s)://<the request's Host>`` or a trusted origin.
    A request with neither header, or ``Origin: null``, is refused."""
    source = origin if origin else referer
    if not source or not host_header or source.strip() == "null":
        return False
    found = _origin_of(source)
    if found is None:
        return False
    scheme, netloc = found
    if netloc == host_header.strip().lower():
        return True
    wanted = {_origin_of(t) for t in trusted}
    return (scheme, netloc) in wanted


# --- hash-password ----------------------------------------------------------------------------------


def _cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.dashboard.auth",
        description="Make a console user entry for DREAMBOT_CONSOLE_USERS (the password comes from stdin "
                    "or a prompt, never from the command line).")
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("hash-password", help="print name:role:scrypt$... for one user")
    make.add_argument("--user", required=True, help="user name (A-Z a-z 0-9 . _ @ + -)")
    make.add_argument("--role", required=True, choices=ROLES, help="viewer (read-only) or operator")
    args = parser.parse_args(argv)
    if not USER_NAME.match(args.user):
        print(f"{parser.prog}: --user must be 1-128 of A-Z a-z 0-9 . _ @ + -", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print(f"{parser.prog}: the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        print(f"{parser.prog}: the password must have at least 8 characters", file=sys.stderr)
        return 2
    print(f"{args.user}:{args.role}:{hash_password(password)}")
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
