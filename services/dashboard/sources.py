"""Where the console's numbers come from: Prometheus (HTTP API) and the session's StateStore (Redis).

Every read returns either data or :class:`Unavailable` with a one-line reason, never raises for an
outage, so one dead backend blanks its panels and nothing else. Reasons and URLs pass through
:func:`strip_credentials` / :func:`services.core.logs.redact` before anyone can display them.

Prometheus: ``GET /api/v1/query`` (instant vector) and ``GET /api/v1/query_range`` (matrix), parsed
from the documented JSON shapes by :func:`parse_vector` / :func:`parse_matrix`. The HTTP client is
injectable (an ``httpx.Client`` with a mock transport in tests). Credentials in the URL
(``http://user:pass@prom:9090``) become basic auth and never appear in the displayed URL.

Redis: the OMS positions snapshot (:data:`services.core.keys.POSITIONS`), the kill-switch flag
(:data:`~services.core.keys.KILL_SWITCH`), the ingest heartbeat
(:data:`~services.core.keys.INGEST_HEARTBEAT`), the OMS metrics stream
(:data:`~services.core.keys.OMS_METRICS_STREAM`) and the kill-switch audit stream
(:data:`~services.core.keys.KILL_SWITCH_AUDIT`, written here too), read through any :class:`StateStore`. The first three
are decoded by :mod:`services.core.shared_state`, the parser risk and the operator use too.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec

from services.core import keys, shared_state
from services.core.logs import redact
from services.core.shared_state import MANUAL as MANUAL  # re-exported for the app
from services.core.shared_state import KillSwitchAudit, KillSwitchState, OmsKillSwitch, SharedStateError
from services.core.state import StateError, StateStore, StateUnavailable

T = TypeVar("T")

NS_PER_S: Final = 1_000_000_000
CONSOLE_SOURCE: Final = "console"

_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/@\s]*@")
_URL_QUERY = re.compile(r"(?P<url>[A-Za-z][A-Za-z0-9+.\-]*://[^\s?#]*)[?#][^\s]*")


@dataclass(frozen=True, slots=True)
class Unavailable:
    """A panel's source could not answer; ``reason`` is safe to display."""

    reason: str

    def __str__(self) -> str:
        return f"unavailable: {self.reason}"


class SourceError(RuntimeError):
    """A read failed; the message is a displayable reason (credentials already stripped)."""


class SourceUnreachableError(SourceError):
    """The backend did not answer at all (refused, timed out): further reads now would fail too."""


def strip_credentials(url: str) -> str:
    """``url`` without user, password, query string or fragment (what the console may display)."""
    if not url:
        return ""
    parts = urlsplit(url)
    if not parts.scheme:
        return _URL_QUERY.sub(r"\g<url>", _URL_USERINFO.sub(r"\g<scheme>", url))
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def safe_reason(text: str) -> str:
    """One displayable line: URLs lose credentials and query strings, secrets are masked."""
    line = " ".join(str(text).split())
    line = _URL_USERINFO.sub(r"\g<scheme>", line)
    line = _URL_QUERY.sub(r"\g<url>", line)
    return str(redact(line))[:300]


def guard(fn: Callable[[], T]) -> T | Unavailable:
    """``fn()``, or Unavailable when it raises SourceError."""
    try:
        return fn()
    except SourceError as exc:
        return Unavailable(str(exc))


# --- Prometheus ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One element of an instant vector."""

    labels: Mapping[str, str]
    ts: float
    value: float


@dataclass(frozen=True, slots=True)
class Series:
    """One element of a range-query matrix: ``points`` are (unix seconds, value), oldest first."""

    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]

    @property
    def last(self) -> float | None:
        return self.points[-1][1] if self.points else None


def _number(raw: Any) -> float:
    # Prometheus sends sample values as strings ("1.5", "NaN", "+Inf") to keep them exact.
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise SourceError(f"Prometheus sent a non-numeric sample value {raw!r}")
    try:
        return float(raw)
    except ValueError:
        raise SourceError(f"Prometheus sent a non-numeric sample value {raw!r}") from None


def _pair(raw: Any) -> tuple[float, float]:
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        raise SourceError(f"Prometheus sent a malformed sample {raw!r:.80}")
    return _number(raw[0]), _number(raw[1])


def _data(doc: Any) -> tuple[str, Any]:
    if not isinstance(doc, dict):
        raise SourceError("Prometheus answered something that is not a JSON object")
    if doc.get("status") != "success":
        kind = doc.get("errorType") or "error"
        raise SourceError(safe_reason(f"Prometheus {kind}: {doc.get('error') or 'no error message'}"))
    data = doc.get("data")
    if not isinstance(data, dict) or "result" not in data:
        raise SourceError("Prometheus answered without data.result")
    return str(data.get("resultType", "")), data["result"]


def _labels(item: Any) -> dict[str, str]:
    if not isinstance(item, dict) or not isinstance(item.get("metric", {}), dict):
        raise SourceError(f"Prometheus sent a malformed result element {item!r:.80}")
    return {str(k): str(v) for k, v in item.get("metric", {}).items()}


def parse_vector(doc: Any) -> list[Sample]:
    """Samples of an instant-query answer (``resultType`` vector, or scalar as one unlabelled sample)."""
    kind, result = _data(doc)
    if kind == "scalar":
        ts, value = _pair(result)
        return [Sample({}, ts, value)]
    if kind != "vector" or not isinstance(result, list):
        raise SourceError(f"expected an instant vector from Prometheus, got {kind or 'nothing'}")
    out: list[Sample] = []
    for item in result:
        labels = _labels(item)
        ts, value = _pair(item.get("value"))
        out.append(Sample(labels, ts, value))
    return out


def parse_matrix(doc: Any) -> list[Series]:
    """Series of a range-query answer (``resultType`` matrix)."""
    kind, result = _data(doc)
    if kind != "matrix" or not isinstance(result, list):
        raise SourceError(f"expected a range vector (matrix) from Prometheus, got {kind or 'nothing'}")
    out: list[Series] = []
    for item in result:
        labels = _labels(item)
        values = item.get("values", [])
        if not isinstance(values, list):
            raise SourceError("Prometheus sent a series whose values are not a list")
        out.append(Series(labels, tuple(_pair(v) for v in values)))
    return out


def label_selector(session: str) -> str:
    """PromQL matchers for one session: series labelled with it, or with no session label at all
    (a Prometheus that scrapes a single session need not add the label)."""
    escaped = re.escape(session).replace("\\", "\\\\").replace('"', '\\"')
    return f'session=~"{escaped}|"'


class PrometheusSource:
    """Queries one Prometheus server over its HTTP API.

    url: the server's base URL (``DREAMBOT_PROMETHEUS_URL``), optionally with a path prefix and
        ``user:password@`` (sent as basic auth). Empty means "not configured": every query is
        Unavailable with a reason saying so.
    client: the httpx client to use (tests inject one with a mock transport); default one with
        ``timeout_s``.
    """

    def __init__(self, url: str, *, client: httpx.Client | None = None, timeout_s: float = 2.0) -> None:
        self.url = url.strip()
        self.display_url = strip_credentials(self.url)
        self._client: httpx.Client | None = None
        if not self.url:
            return
        parsed = httpx.URL(self.url)
        auth: tuple[str, str] | None = None
        if parsed.username or parsed.password:
            auth = (parsed.username, parsed.password)
            parsed = parsed.copy_with(username=None, password=None)
        self._base = str(parsed).rstrip("/")
        self._auth = auth
        self._client = client or httpx.Client(timeout=timeout_s)

    @property
    def configured(self) -> bool:
        return self._client is not None

    def _get(self, path: str, params: Mapping[str, str]) -> Any:
        if self._client is None:
            raise SourceUnreachableError("no Prometheus URL configured (set DREAMBOT_PROMETHEUS_URL)")
        try:
            resp = self._client.get(f"{self._base}{path}", params=dict(params),
                                    auth=self._auth if self._auth else httpx.USE_CLIENT_DEFAULT)
        except httpx.TimeoutException as exc:
            reason = f"Prometheus at {self.display_url} timed out ({type(exc).__name__})"
            raise SourceUnreachableError(safe_reason(reason)) from None
        except httpx.HTTPError as exc:
            raise SourceUnreachableError(safe_reason(f"Prometheus at {self.display_url} unreachable: {exc}")) from None
        try:
            doc = resp.json()
        except ValueError:
            raise SourceError(
                f"Prometheus at {self.display_url} answered HTTP {resp.status_code} without JSON") from None
        if resp.status_code >= 400 and not (isinstance(doc, dict) and doc.get("status") == "error"):
            raise SourceError(f"Prometheus at {self.display_url} answered HTTP {resp.status_code}")
        return doc

    def query(self, promql: str, at: float | None = None) -> list[Sample]:
        """Evaluate ``promql`` at ``at`` (unix seconds; default: the server's now). Raises SourceError."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return parse_vector(self._get("/api/v1/query", params))

    def query_range(self, promql: str, start: float, end: float, step_s: float) -> list[Series]:
        """Evaluate ``promql`` every ``step_s`` from ``start`` to ``end`` (unix seconds). Raises SourceError."""
        params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{max(step_s, 0.001):g}"}
        return parse_matrix(self._get("/api/v1/query_range", params))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


# --- the session's state (Redis) -------------------------------------------------------------------


KillSwitchView = KillSwitchState  # the flag as stored (absent key = released)


@dataclass(frozen=True, slots=True)
class HeartbeatView:
    """The ingest heartbeat: event time of the newest market data and its age at ``now``."""

    ts: int
    seq: int
    age_s: float
    stale: bool


@dataclass(frozen=True, slots=True)
class BookView:
    """The OMS's positions snapshot."""

    ts: int
    broker: str
    flat: bool
    orders: tuple[Mapping[str, Any], ...]
    positions: tuple[Mapping[str, Any], ...]
    realized_pnl: float
    unrealized_pnl: float
    oms_kill_switch: OmsKillSwitch | None = None


@dataclass(frozen=True, slots=True)
class RedisSnapshot:
    """Everything the console reads from the StateStore in one refresh."""

    kill_switch: KillSwitchView | Unavailable
    heartbeat: HeartbeatView | Unavailable | None
    book: BookView | Unavailable | None
    oms_metrics: list[Mapping[str, Any]] | Unavailable = field(default_factory=list)
    audit: list[KillSwitchAudit | Unavailable] | Unavailable = field(default_factory=list)


def _decode(decode: Callable[[bytes], T], raw: bytes) -> T:
    try:
        return decode(raw)
    except SharedStateError as exc:
        raise SourceError(safe_reason(str(exc))) from None


def parse_kill_switch(raw: bytes | None) -> KillSwitchView:
    """The flag (:class:`~services.core.shared_state.KillSwitchState`); no key means released."""
    if raw is None:
        return shared_state.RELEASED
    return _decode(shared_state.decode_kill_switch, raw)


def parse_heartbeat(raw: bytes | None, now_ns: int, stale_after_s: float) -> HeartbeatView | None:
    """The heartbeat ``{"ts": ns, "seq": int}`` with its age at ``now_ns``; None when never written."""
    if raw is None:
        return None
    beat = _decode(shared_state.decode_heartbeat, raw)
    age_s = (now_ns - beat.ts) / NS_PER_S
    return HeartbeatView(ts=beat.ts, seq=beat.seq, age_s=age_s, stale=age_s > stale_after_s)


def parse_book(raw: bytes | None) -> BookView | None:
    """The OMS snapshot (:class:`~services.core.shared_state.OmsSnapshot`) with its open positions and
    working orders as table rows; None when the OMS never wrote one."""
    if raw is None:
        return None
    snap = _decode(shared_state.decode_oms_snapshot, raw)
    return BookView(
        ts=snap.ts,
        broker=snap.broker,
        flat=snap.flat,
        orders=tuple(msgspec.structs.asdict(o) for o in snap.working_orders),
        positions=tuple(msgspec.structs.asdict(p) for p in snap.open_positions),
        realized_pnl=snap.realized_pnl,
        unrealized_pnl=snap.unrealized_pnl,
        oms_kill_switch=snap.kill_switch,
    )


def parse_stream_entry(raw: bytes) -> Mapping[str, Any]:
    """One OMS metrics stream entry: its JSON object (secrets masked), or ``{"entry": text}``."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"entry": safe_reason(raw.decode("utf-8", "replace"))}
    if not isinstance(doc, dict):
        return {"entry": safe_reason(json.dumps(doc))}
    return dict(redact(doc))


def parse_audit_entry(raw: bytes) -> KillSwitchAudit | Unavailable:
    """One kill-switch audit entry, or Unavailable saying why it cannot be read."""
    try:
        return shared_state.decode_kill_switch_audit(raw)
    except SharedStateError as exc:
        return Unavailable(safe_reason(str(exc)))


def kill_switch_payload(engaged: bool, ts_ns: int, reason: str = MANUAL) -> bytes:
    """The flag the console writes: ``{"engaged", "reason", "ts", "source": "console"}``."""
    return shared_state.encode(KillSwitchState(engaged, reason, ts_ns, CONSOLE_SOURCE))


class SessionSource:
    """Reads (and for the kill switch, writes) one session's keys through a StateStore.

    store: a session-scoped StateStore (``RedisState(url, session)``), or None when no Redis URL is
        configured.
    clock_ns: wall clock (ns since epoch) used for heartbeat ages and the flag's ``ts``.
    stale_after_s: heartbeat age past which market data counts as stale (the chart's alert uses 30 s).
    stream_count: how many OMS metrics stream entries a refresh shows.
    """

    def __init__(
        self,
        store: StateStore | None,
        *,
        clock_ns: Callable[[], int],
        stale_after_s: float = 30.0,
        stream_count: int = 20,
    ) -> None:
        self.store = store
        self.clock_ns = clock_ns
        self.stale_after_s = stale_after_s
        self.stream_count = stream_count

    def _call(self, fn: Callable[[StateStore], T]) -> T:
        if self.store is None:
            raise SourceUnreachableError("no Redis URL configured (set DREAMBOT_REDIS_URL)")
        try:
            return fn(self.store)
        except StateUnavailable as exc:
            raise SourceUnreachableError(safe_reason(str(exc))) from None
        except StateError as exc:
            raise SourceError(safe_reason(str(exc))) from None

    def kill_switch(self) -> KillSwitchView:
        return parse_kill_switch(self._call(lambda s: s.get(keys.KILL_SWITCH)))

    def heartbeat(self) -> HeartbeatView | None:
        raw = self._call(lambda s: s.get(keys.INGEST_HEARTBEAT))
        return parse_heartbeat(raw, self.clock_ns(), self.stale_after_s)

    def book(self) -> BookView | None:
        return parse_book(self._call(lambda s: s.get(keys.POSITIONS)))

    def oms_metrics(self) -> list[Mapping[str, Any]]:
        """The newest entries of the OMS metrics stream, newest first."""
        raws = self._call(lambda s: s.read(keys.OMS_METRICS_STREAM, self.stream_count))
        return [parse_stream_entry(r) for r in reversed(raws)]

    def audit(self, count: int = 20) -> list[KillSwitchAudit | Unavailable]:
        """The newest kill-switch audit entries, newest first."""
        raws = self._call(lambda s: s.read(keys.KILL_SWITCH_AUDIT, count))
        return [parse_audit_entry(r) for r in reversed(raws)]

    def append_audit(self, entry: KillSwitchAudit) -> None:
        """Add ``entry`` to the session's kill-switch audit stream (capped at 10 000 entries)."""
        payload = shared_state.encode(entry)
        self._call(lambda s: s.append(keys.KILL_SWITCH_AUDIT, payload, 10_000))

    def snapshot(self, audit_count: int = 20) -> RedisSnapshot:
        """One refresh. If the store is unreachable on the first read, every part carries that reason
        (no further reads, so an outage costs one timeout, not four)."""
        try:
            first: KillSwitchView | Unavailable = self.kill_switch()
        except SourceUnreachableError as exc:
            down = Unavailable(str(exc))
            return RedisSnapshot(down, down, down, down, down)
        except SourceError as exc:
            first = Unavailable(str(exc))
        return RedisSnapshot(first, guard(self.heartbeat), guard(self.book), guard(self.oms_metrics),
                             guard(lambda: self.audit(audit_count)))

    def set_kill_switch(self, engaged: bool, reason: str = MANUAL) -> bytes:
        """Write the flag (engaged or released by the console) and return the bytes written."""
        payload = kill_switch_payload(engaged, self.clock_ns(), reason)
        self._call(lambda s: s.set(keys.KILL_SWITCH, payload))
        return payload


# --- panels ----------------------------------------------------------------------------------------

PanelKind = Literal["range", "instant"]


@dataclass(frozen=True, slots=True)
class PromPanel:
    """One Prometheus-backed chart; ``$SESSION`` in ``promql`` becomes the session's label matchers.

    kind: ``range`` (line chart over the console's window) or ``instant`` (bar chart of now).
    legend: label names joined to name each series. unit: shown in the title and the value table.
    """

    key: str
    title: str
    promql: str
    kind: PanelKind
    legend: tuple[str, ...]
    unit: str = ""

    def expr(self, session: str) -> str:
        return self.promql.replace("$SESSION", label_selector(session))


# Metric names from services.core.metrics.StageMetrics (counters gain "_total" when exposed).
PANELS: Final[tuple[PromPanel, ...]] = (
    PromPanel("events_rate", "Events in per second, by stage",
              "sum by (stage) (rate(dreambot_events_in_total{$SESSION}[1m]))", "range", ("stage",), "ev/s"),
    PromPanel("processing_p99", "Processing latency p99, by stage",
              "histogram_quantile(0.99, sum by (stage, le) (rate(dreambot_processing_seconds_bucket{$SESSION}[5m])))",
              "range", ("stage",), "s"),
    PromPanel("tick_to_order", "Tick-to-order latency (p50, p99)",
              'label_replace(histogram_quantile(0.5, sum by (le) '
              '(rate(dreambot_tick_to_order_seconds_bucket{$SESSION}[5m]))), "quantile", "p50", "", "")'
              ' or label_replace(histogram_quantile(0.99, sum by (le) '
              '(rate(dreambot_tick_to_order_seconds_bucket{$SESSION}[5m]))), "quantile", "p99", "", "")',
              "range", ("quantile",), "s"),
    PromPanel("kafka_lag", "Kafka consumer lag, by stage and topic",
              "sum by (stage, topic) (dreambot_kafka_lag_messages{$SESSION})", "instant", ("stage", "topic"), "msgs"),
    PromPanel("orders_by_status", "Orders by status",
              "sum by (status) (dreambot_orders_total{$SESSION})", "instant", ("status",), "orders"),
    PromPanel("pnl", "PnL over time",
              "sum by (stage, kind) (dreambot_pnl_usd{$SESSION})", "range", ("stage", "kind"), "USD"),
)


def series_name(labels: Mapping[str, str], legend: Sequence[str], fallback: str = "value") -> str:
    """Legend text of one series: its ``legend`` label values joined by spaces."""
    parts = [labels[k] for k in legend if labels.get(k)]
    return " ".join(parts) if parts else fallback


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


PanelData = list[Series] | list[Sample]


def fetch_panels(
    prometheus: PrometheusSource,
    panels: Sequence[PromPanel],
    session: str,
    now_s: float,
    window_s: float,
    step_s: float,
) -> dict[str, PanelData | Unavailable]:
    """Run every panel's query: range panels over ``[now_s - window_s, now_s]``, instant ones at the
    server's now. Once Prometheus is unreachable the remaining panels share that reason."""
    out: dict[str, PanelData | Unavailable] = {}
    down: Unavailable | None = None
    for panel in panels:
        if down is not None:
            out[panel.key] = down
            continue
        try:
            if panel.kind == "range":
                out[panel.key] = prometheus.query_range(panel.expr(session), now_s - window_s, now_s, step_s)
            else:
                out[panel.key] = prometheus.query(panel.expr(session))
        except SourceUnreachableError as exc:
            down = Unavailable(str(exc))
            out[panel.key] = down
        except SourceError as exc:
            out[panel.key] = Unavailable(str(exc))
    return out
