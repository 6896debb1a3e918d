"""RedisState against a real redis-server (Debian package, started by tests/harness/redis_server.py)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
import redis

from services.core import keys
from services.core.redis_state import RedisState, StateError, StateUnavailable
from services.core.state import MemoryState, StateStore
from tests.harness.redis_server import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture
def state(redis_server: RedisServer, session_name: str) -> Iterator[RedisState]:
    store = RedisState(redis_server.url, session_name)
    yield store
    store.close()


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def test_get_set_delete_under_the_session_prefix(state: RedisState, raw: redis.Redis,
                                                 redis_server: RedisServer, session_name: str) -> None:
    assert state.get(keys.KILL_SWITCH) is None
    state.set(keys.KILL_SWITCH, b'{"engaged": true}')
    assert state.get(keys.KILL_SWITCH) == b'{"engaged": true}'
    assert raw.get(f"{session_name}:dreambot:kill_switch") == b'{"engaged": true}'
    assert state.key(keys.KILL_SWITCH) == f"{session_name}:dreambot:kill_switch"

    other = RedisState(redis_server.url, f"{session_name}-other")
    try:
        assert other.get(keys.KILL_SWITCH) is None  # sessions never see each other's keys
        other.set(keys.KILL_SWITCH, b"other")
        assert state.get(keys.KILL_SWITCH) == b'{"engaged": true}'
    finally:
        other.close()

    state.set(keys.KILL_SWITCH, b"\x00\xffbinary")  # values are bytes, kept exactly
    assert state.get(keys.KILL_SWITCH) == b"\x00\xffbinary"
    state.delete(keys.KILL_SWITCH)
    state.delete(keys.KILL_SWITCH)  # deleting a missing key is fine
    assert state.get(keys.KILL_SWITCH) is None
    assert state.healthy()
    state.ping()


def test_ttl_expiry(state: RedisState) -> None:
    key = keys.INGEST_HEARTBEAT
    state.set(key, b"beat", ttl_s=0.3)
    remaining = state.ttl_s(key)
    assert remaining is not None and 0.0 < remaining <= 0.3
    assert state.get(key) == b"beat"
    time.sleep(0.45)
    assert state.get(key) is None
    state.set(key, b"forever")
    assert state.ttl_s(key) is None
    state.set(key, b"short", ttl_s=0.3)
    state.set(key, b"forever again")  # a plain set clears the TTL, as in MemoryState
    time.sleep(0.45)
    assert state.get(key) == b"forever again"
    with pytest.raises(ValueError, match="ttl_s"):
        state.set(key, b"x", ttl_s=0)


def test_streams_are_capped_and_read_newest_oldest_first(redis_server: RedisServer,
                                                         session_name: str) -> None:
    approx = RedisState(redis_server.url, session_name)
    exact = RedisState(redis_server.url, session_name, exact_trim=True)
    try:
        for i in range(1000):
            approx.append("metrics:approx", f"{i}".encode(), maxlen=50)
            exact.append("metrics:exact", f"{i}".encode(), maxlen=50)
        # MAXLEN ~ trims whole stream nodes (100 entries by default): a little over the cap is allowed.
        assert 50 <= approx.length("metrics:approx") <= 50 + 100
        assert exact.length("metrics:exact") == 50
        assert approx.read("metrics:approx", 3) == [b"997", b"998", b"999"]
        assert exact.read("metrics:exact", 1000) == [f"{i}".encode() for i in range(950, 1000)]
        assert exact.read("metrics:exact", 0) == []
        assert exact.read("metrics:missing") == []
        with pytest.raises(ValueError, match="maxlen"):
            exact.append("metrics:exact", b"x", maxlen=0)
    finally:
        approx.close()
        exact.close()


def test_oms_metric_stream_name_follows_env(redis_server: RedisServer, raw: redis.Redis, session_name: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMS_METRIC_STREAM", "dreambot:oms_metrics_v2")
    store = RedisState(redis_server.url, session_name)
    try:
        store.append(keys.OMS_METRICS_STREAM, b'{"fills": 1}')
        assert raw.xlen(f"{session_name}:dreambot:oms_metrics_v2") == 1
        assert raw.exists(f"{session_name}:dreambot:oms_metrics") == 0
        assert store.read(keys.OMS_METRICS_STREAM) == [b'{"fills": 1}']
        store.append("other_stream", b"x")  # only the OMS metrics stream is renamed
        assert raw.xlen(f"{session_name}:other_stream") == 1
    finally:
        store.close()
    monkeypatch.delenv("OMS_METRIC_STREAM")
    default = RedisState(redis_server.url, session_name)
    try:
        assert default.stream_key(keys.OMS_METRICS_STREAM) == f"{session_name}:dreambot:oms_metrics"
    finally:
        default.close()


def test_same_answers_as_memory_state(state: RedisState) -> None:
    memory = MemoryState(prefix="m")
    stores: list[StateStore] = [memory, state]
    for store in stores:
        store.set("a", b"1")
        store.set("b", b"2")
        store.delete("b")
        for i in range(30):
            store.append("s", f"{i}".encode(), maxlen=100)
    for store in stores:
        assert store.get("a") == b"1"
        assert store.get("b") is None
        assert store.read("s", 5) == [b"25", b"26", b"27", b"28", b"29"]
        assert store.read("s", 100) == [f"{i}".encode() for i in range(30)]


def test_redis_errors_that_are_not_outages_are_state_errors(state: RedisState) -> None:
    state.set("plain", b"value")
    with pytest.raises(StateError) as caught:
        state.read("plain")  # XREVRANGE on a string key: WRONGTYPE
    assert not isinstance(caught.value, StateUnavailable)
    assert "WRONGTYPE" in str(caught.value)


def test_unavailable_while_redis_is_down_and_recovers_on_its_own(session_name: str) -> None:
    server = RedisServer().start()
    store = RedisState(server.url, session_name)
    try:
        store.set(keys.KILL_SWITCH, b"before")
        server.stop()

        started = time.monotonic()
        with pytest.raises(StateUnavailable, match=f"127.0.0.1:{server.port}"):
            store.get(keys.KILL_SWITCH)
        assert time.monotonic() - started < 2.0  # fails fast: risk halts entries promptly
        with pytest.raises(StateUnavailable):
            store.set(keys.KILL_SWITCH, b"during")
        with pytest.raises(StateUnavailable):
            store.append(keys.OMS_METRICS_STREAM, b"m")
        with pytest.raises(StateUnavailable):
            store.ping()
        assert not store.healthy()

        server.start()  # same port, same data dir; the data was not persisted (--save "")
        assert store.healthy()  # the same client reconnects by itself
        assert store.get(keys.KILL_SWITCH) is None
        store.set(keys.KILL_SWITCH, b"after")
        assert store.get(keys.KILL_SWITCH) == b"after"
    finally:
        store.close()
        server.close()


def test_unavailable_when_redis_hangs_then_recovers(session_name: str) -> None:
    server = RedisServer().start()
    store = RedisState(server.url, session_name, socket_timeout_s=0.3, retries=1)
    try:
        store.set("k", b"v")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)  # accepts nothing, answers nothing: only timeouts tell
        try:
            started = time.monotonic()
            with pytest.raises(StateUnavailable, match="unreachable"):
                store.get("k")
            assert time.monotonic() - started < 3.0
            assert not store.healthy()
        finally:
            server.proc.send_signal(signal.SIGCONT)
        assert store.get("k") == b"v"
        assert store.healthy()
    finally:
        store.close()
        server.close()
