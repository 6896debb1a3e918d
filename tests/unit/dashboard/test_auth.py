"""The console's access primitives: scrypt hashes, user lists, signed sessions and their expiry, CSRF
tokens bound to a session, Host/Origin rules and the login throttle."""

from __future__ import annotations

import base64
import json

import pytest

from services.dashboard.auth import (
    AuthConfigError,
    LoginThrottle,
    PasswordHash,
    SessionSigner,
    UserDirectory,
    hash_password,
    host_allowed,
    origin_allowed,
    verify_password,
)

KEY = b"0123456789abcdef0123456789abcdef"


def test_hash_verifies_only_its_own_password() -> None:
    encoded = hash_password("correct horse", log2_n=10)
    assert encoded.startswith("scrypt$10$8$1$")
    assert verify_password("correct horse", encoded)
    assert not verify_password("correct horsE", encoded)
    assert not verify_password("", encoded)
    again = hash_password("correct horse", log2_n=10)
    assert again != encoded and verify_password("correct horse", again)  # a fresh salt every time


def test_a_known_scrypt_vector() -> None:
    # RFC 7914 section 12, second vector: scrypt("password", "NaCl", N=1024, r=8, p=16, dkLen=64).
    expected = bytes.fromhex(
        "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b3731622eaf30d92e22a3886ff109279d9830dac727afb9"
        "4a83ee6d8360cbdfa2cc0640")
    salt = b"NaCl" * 4  # the module wants 16 bytes of salt; check the primitive with the RFC's own salt
    rfc = PasswordHash(10, 8, 16, b"NaCl", expected)
    assert rfc.derive("password") == expected
    assert PasswordHash.parse(hash_password("password", log2_n=10, salt=salt)).salt == salt


@pytest.mark.parametrize("encoded, message", [
    ("hunter2", "must look like scrypt$"),
    ("bcrypt$10$8$1$c2FsdA$a2V5", "must look like scrypt$"),
    ("scrypt$x$8$1$c2FsdA$a2V5", "non-numeric cost"),
    ("scrypt$30$8$1$" + "A" * 22 + "$" + "A" * 43, "outside log2 N"),
    ("scrypt$10$8$1$c2FsdA$" + "A" * 43, "salt of at least 16 bytes"),
])
def test_malformed_hashes_are_refused(encoded: str, message: str) -> None:
    with pytest.raises(AuthConfigError, match=message.replace("$", r"\$")):
        PasswordHash.parse(encoded)


def test_user_list_roles_and_authentication() -> None:
    h = hash_password("pw-alice-1", log2_n=10)
    users = UserDirectory.parse(f"alice:operator:{h}\n\n bob:viewer:{hash_password('pw-bob-1', log2_n=10)} ;"
                                "sso@example.com:viewer:-")
    assert len(users) == 3
    alice = users.authenticate("alice", "pw-alice-1")
    assert alice is not None and alice.role == "operator" and alice.can_act
    bob = users.authenticate("bob", "pw-bob-1")
    assert bob is not None and not bob.can_act
    assert users.authenticate("alice", "pw-bob-1") is None
    assert users.authenticate("mallory", "pw-alice-1") is None
    assert users.authenticate("sso@example.com", "") is None  # no password: proxy header only
    with pytest.raises(AuthConfigError, match="listed twice"):
        UserDirectory.parse(f"alice:operator:{h};alice:viewer:{h}")
    with pytest.raises(AuthConfigError, match="expected name:role:hash"):
        UserDirectory.parse("alice-operator")
    with pytest.raises(AuthConfigError, match="entry 1: the name"):
        UserDirectory.parse(f"al ice:operator:{h}")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_session_cookie_expires_and_cannot_be_forged() -> None:
    clock = Clock(1_800_000_000.0)
    signer = SessionSigner(KEY, ttl_s=3600, clock_s=clock)
    cookie, claims = signer.issue("alice", "password")
    assert signer.verify(cookie) == claims and claims.expires_s - claims.issued_s == 3600
    clock.now += 3599
    assert signer.verify(cookie) is not None
    clock.now += 1
    assert signer.verify(cookie) is None  # expired at issued + ttl

    clock.now = 1_800_000_000.0
    payload, signature = cookie.split(".")
    doc = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    doc["u"] = "mallory"
    forged = base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()
    assert signer.verify(f"{forged}.{signature}") is None
    assert signer.verify(f"{payload}.{signature[:-2]}AA") is None
    assert SessionSigner(b"another key of thirty-two bytes!", 3600, clock).verify(cookie) is None
    for junk in (None, "", "a.b.c", "x" * 5000, "notbase64!.sig"):
        assert signer.verify(junk) is None
    # A key for a longer lifetime does not stretch a short-lived signer's sessions.
    long_cookie, _ = SessionSigner(KEY, ttl_s=7200, clock_s=clock).issue("alice", "password")
    assert signer.verify(long_cookie) is None
    with pytest.raises(AuthConfigError, match="at least 32 bytes"):
        SessionSigner(b"short", 3600)


def test_a_signed_out_session_is_refused() -> None:
    signer = SessionSigner(KEY, 3600, Clock(1_800_000_000.0))
    cookie, claims = signer.issue("alice", "password")
    other, _ = signer.issue("alice", "password")
    signer.revoke(claims)
    assert signer.verify(cookie) is None
    assert signer.verify(other) is not None


def test_the_csrf_token_is_bound_to_its_session() -> None:
    signer = SessionSigner(KEY, 3600)
    _, one = signer.issue("alice", "password")
    _, two = signer.issue("alice", "password")
    token = signer.csrf_token(one.sid)
    assert signer.check_csrf(one.sid, token)
    assert not signer.check_csrf(two.sid, token)
    assert not signer.check_csrf(one.sid, None) and not signer.check_csrf(one.sid, "")
    assert not SessionSigner(b"k" * 32, 3600).check_csrf(one.sid, token)  # another key
    # Tokens of one kind do not pass as another: the login token of a nonce is not a CSRF token.
    assert signer.login_token(one.sid) != token
    assert signer.check_login_token("nonce-1", signer.login_token("nonce-1"))
    assert not signer.check_login_token("nonce-2", signer.login_token("nonce-1"))
    assert not signer.check_login_token(None, signer.login_token("nonce-1"))


@pytest.mark.parametrize("host, ok", [
    ("127.0.0.1:8050", True), ("localhost", True), ("LOCALHOST:1", True), ("[::1]:8050", True),
    ("evil.example:8050", False), ("127.0.0.1.evil.example", False), ("", False), (None, False),
])
def test_host_allowed(host: str | None, ok: bool) -> None:
    assert host_allowed(host, ("localhost", "127.0.0.1", "::1")) is ok


@pytest.mark.parametrize("origin, referer, ok", [
    ("http://127.0.0.1:8050", None, True),
    ("https://127.0.0.1:8050", None, True),
    (None, "http://127.0.0.1:8050/some/page?x=1", True),
    ("http://127.0.0.1:8051", None, False),
    ("http://evil.example", "http://127.0.0.1:8050/", False),  # Origin wins over Referer
    ("null", None, False),
    (None, None, False),
    ("http://user@127.0.0.1:8050", None, False),
    ("https://console.example", None, True),  # trusted
])
def test_origin_allowed(origin: str | None, referer: str | None, ok: bool) -> None:
    assert origin_allowed(origin, referer, "127.0.0.1:8050", ("https://console.example",)) is ok


def test_login_throttle_blocks_after_repeated_failures() -> None:
    clock = Clock(0.0)
    throttle = LoginThrottle(max_failures=3, window_s=60, clock_s=clock)
    for _ in range(3):
        assert not throttle.blocked("user:alice")
        throttle.failure("user:alice", "client:1")
    assert throttle.blocked("user:alice") and throttle.blocked("client:1")
    assert not throttle.blocked("user:bob")
    clock.now = 61
    assert not throttle.blocked("user:alice")
