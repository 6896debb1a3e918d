"""RedisState: the StateStore over Redis, for services mode.

Keys are ``<session>:<logical key>`` (``paper-1:dreambot:kill_switch``). Streams (``append``/``read``)
are Redis Streams: ``XADD <key> MAXLEN ~ <maxlen> * v <value>``. The ``~`` lets Redis trim whole
stream nodes, which is cheap; the stream may therefore hold a little more than ``maxlen`` entries
(at most one node, ``stream-node-max-entries`` = 100 by default) — pass ``exact_trim=True`` for an
exact cap. ``read`` returns the newest entries either way, and a dashboard can follow the stream by
entry id (``XREAD``). The OMS metrics stream (:data:`services.core.keys.OMS_METRICS_STREAM`) is
renamed by the env variable ``OMS_METRIC_STREAM`` (still under the session prefix).

Outages: every command uses short socket timeouts and a few quick retries with jittered
exponential backoff; if Redis still cannot be reached the call raises :class:`StateUnavailable`
(the risk stage refuses entries while it does). The connection pool reconnects by itself on the next
call once Redis is back — nothing needs restarting.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Final, TypeVar, cast

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from services.core import keys
from services.core.state import StateError, StateUnavailable

T = TypeVar("T")

_STREAM_FIELD: Final = b"v"



class RedisState:
    """Session-scoped :class:`services.core.state.StateStore` backed by Redis.

    url: ``redis://[user:password@]host:port/db`` (TradingSession ``spec.redis.url``).
    session: prefixes every key as ``<session>:``.
    socket_timeout_s / connect_timeout_s: how long one attempt may block.
    retries: extra attempts (with backoff capped at ``backoff_cap_s``) before StateUnavailable.
    exact_trim: cap streams exactly (``MAXLEN``) instead of approximately (``MAXLEN ~``).
    oms_metric_stream: name used for keys.OMS_METRICS_STREAM; default env OMS_METRIC_STREAM.
    """

    def __init__(
        self,
        url: str,
        session: str,
        *,
        socket_timeout_s: float = 0.5,
        connect_timeout_s: float = 0.5,
        retries: int = 2,
        backoff_cap_s: float = 0.2,
        exact_trim: bool = False,
        oms_metric_stream: str | None = None,
    ) -> None:
        if not session:
            raise ValueError("session must be non-empty: it prefixes every key")
        self.session = session
        self.prefix = f"{session}:"
        self.exact_trim = exact_trim
        self.oms_metric_stream = (
            oms_metric_stream or os.environ.get("OMS_METRIC_STREAM") or keys.OMS_METRICS_STREAM
        )
        self._client: redis.Redis = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=connect_timeout_s,
            retry=Retry(ExponentialWithJitterBackoff(cap=backoff_cap_s, base=0.02), retries),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError],
            health_check_interval=10,
            decode_responses=False,
        )
        kw = self._client.connection_pool.connection_kwargs
        self.where = f"{kw.get('host', kw.get('path', '?'))}:{kw.get('port', '')}/{kw.get('db', 0)}"

    # --- keys --------------------------------------------------------------------------------------

    def key(self, name: str) -> str:
        """The Redis key of logical key ``name``."""
        return f"{self.prefix}{name}"

    def stream_key(self, stream: str) -> str:
        """The Redis key of logical stream ``stream`` (OMS metrics renamed by OMS_METRIC_STREAM)."""
        return self.key(self.oms_metric_stream if stream == keys.OMS_METRICS_STREAM else stream)

    def _call(self, op: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise StateUnavailable(f"Redis at {self.where} unreachable ({op}): {exc}") from exc
        except redis.RedisError as exc:
            raise StateError(f"Redis at {self.where} refused {op}: {exc}") from exc

    # --- StateStore --------------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        k = self.key(key)
        return cast("bytes | None", self._call(f"GET {k}", lambda: self._client.get(k)))

    def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        k = self.key(key)
        if ttl_s is None:
            self._call(f"SET {k}", lambda: self._client.set(k, value))
            return
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        ms = max(1, round(ttl_s * 1000))
        self._call(f"SET {k} PX {ms}", lambda: self._client.set(k, value, px=ms))

    def delete(self, key: str) -> None:
        k = self.key(key)
        self._call(f"DEL {k}", lambda: self._client.delete(k))

    def append(self, stream: str, value: bytes, maxlen: int = 10_000) -> None:
        if maxlen <= 0:
            raise ValueError(f"maxlen must be positive, got {maxlen}")
        k = self.stream_key(stream)
        fields: dict[Any, Any] = {_STREAM_FIELD: value}
        self._call(f"XADD {k}", lambda: self._client.xadd(
            k, fields, maxlen=maxlen, approximate=not self.exact_trim))

    def read(self, stream: str, count: int = 100) -> list[bytes]:
        if count <= 0:
            return []
        k = self.stream_key(stream)
        entries = cast("list[tuple[bytes, dict[bytes, bytes]]]",
                       self._call(f"XREVRANGE {k}", lambda: self._client.xrevrange(k, count=count)))
        return [fields.get(_STREAM_FIELD, b"") for _id, fields in reversed(entries)]

    # --- extras ------------------------------------------------------------------------------------

    def length(self, stream: str) -> int:
        """Entries currently held by ``stream``."""
        k = self.stream_key(stream)
        return int(self._call(f"XLEN {k}", lambda: self._client.xlen(k)))

    def ttl_s(self, key: str) -> float | None:
        """Seconds until ``key`` expires; None if it has no TTL or does not exist."""
        k = self.key(key)
        ms = int(self._call(f"PTTL {k}", lambda: self._client.pttl(k)))
        return ms / 1000 if ms >= 0 else None

    def ping(self) -> None:
        """Round trip to Redis; raises StateUnavailable when it does not answer."""
        self._call("PING", self._client.ping)

    def healthy(self) -> bool:
        """True when Redis answers a PING now (never raises)."""
        try:
            self.ping()
        except StateError:
            return False
        return True

    def close(self) -> None:
        """Drop pooled connections."""
        self._client.close()

    def __enter__(self) -> RedisState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
