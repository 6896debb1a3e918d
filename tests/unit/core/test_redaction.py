"""The log redactor masks secrets by value, URL passwords, secret query keys and exception text."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

import orjson
import pytest

from services.core.logs import JsonFormatter, redact, register_secret
from services.core.session_config import load_session_config

TOKEN = "tradier-token-7c1d9e55aa"
POLYGON = "polygonKEY0123456789"
REDIS_PW = "redis-pass-55aa77"


@pytest.fixture(scope="module", autouse=True)
def _configured() -> None:
    # Loading a session config registers its credentials and the Redis URL's password.
    load_session_config(environ={"TRADIER_ACCESS_TOKEN": TOKEN, "POLYGON_API_KEY": POLYGON,
                                 "DREAMBOT_REDIS_URL": f"redis://:{REDIS_PW}@redis:6379/0"}, use_env_file=False)


def _logged(logger: logging.Logger, emit: Callable[[], None]) -> dict[str, object]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    try:
        emit()
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue().strip().splitlines()[-1]
    assert TOKEN not in line and POLYGON not in line and REDIS_PW not in line
    return dict(orjson.loads(line))


@pytest.mark.parametrize(("text", "masked"), [
    (f"submit failed: token {TOKEN} refused", "submit failed: token *** refused"),
    (f"GET https://api.polygon.io/v3/x?apiKey={POLYGON}&limit=5", "GET https://api.polygon.io/v3/x?apiKey=***&limit=5"),
    ("GET /v2/aggs?apiKey=unregisteredKey99&x=1", "GET /v2/aggs?apiKey=***&x=1"),
    (f"cannot reach redis://:{REDIS_PW}@redis:6379/0", "cannot reach redis://:***@redis:6379/0"),
    ("https://alice:s3cr3tpw@host/p", "https://alice:***@host/p"),
    ("Authorization: Bearer abc.def-123", "Authorization: Bearer ***"),
])
def test_strings_are_masked(text: str, masked: str) -> None:
    assert redact(text) == masked


def test_secret_values_are_masked_in_messages_fields_and_exceptions() -> None:
    log = logging.getLogger("test.redaction")
    log.setLevel(logging.INFO)

    def emit() -> None:
        try:
            raise RuntimeError(f"venue said no to {TOKEN}")
        except RuntimeError as exc:
            log.exception("order failed for %s", POLYGON, extra={"error": exc, "url": f"redis://:{REDIS_PW}@r/0"})

    doc = _logged(log, emit)
    assert doc["msg"] == "order failed for ***"
    assert doc["error"] == "RuntimeError: venue said no to ***"
    assert doc["url"] == "redis://:***@r/0"
    assert "venue said no to ***" in str(doc["exc"])


def test_short_values_are_not_registered() -> None:
    register_secret("abc")
    assert redact("abc def") == "abc def"
