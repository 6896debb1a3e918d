"""The OMS service: approved orders, risk commands and chains in; executions and outcomes out
(``python -m services.oms.main``).

After every round (lockstep) or batch (free-running) in which it handled something, the OMS writes
:meth:`~services.oms.engine.OrderManager.snapshot` to Redis (``dreambot:positions``) and, when orders or
positions changed, appends a metrics record to the OMS metrics stream (``dreambot:oms_metrics``,
renamed by ``OMS_METRIC_STREAM``). A Redis outage never stops it: quotes keep being worked (stops,
take-profits, expiries), failed writes are logged and counted, and the latest snapshot is written
once Redis answers again.

The audit log (``OMS_AUDIT_PATH``, rotated at ``OMS_AUDIT_ROTATE_MB``) is written once per record
even across restarts: a restarted OMS rebuilds its state by handling its inputs again, and the
records that produces which the log already holds are not written twice (:class:`ResumableAudit`).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import orjson

from services.core import keys
from services.core.clock import ReplayClock
from services.core.events import Event, OrderEvent, OrderRequest, SignalIntent
from services.core.logs import redact
from services.core.metrics import StageMetrics
from services.core.stage import Output
from services.oms.audit import AuditLog
from services.oms.engine import OrderManager
from services.runtime.service import GuardedWrites, ServiceHooks


def _line(record: Mapping[str, Any]) -> bytes:
    """The exact line :class:`~services.oms.audit.AuditLog` writes for ``record``."""
    return orjson.dumps(redact(dict(record)), option=orjson.OPT_SORT_KEYS) + b"\n"


def _fingerprint(line: bytes) -> bytes:
    return hashlib.blake2b(line.rstrip(b"\n"), digest_size=16).digest()


class ResumableAudit:
    """An AuditLog that does not repeat what an earlier run of this OMS already wrote.

    On start it counts the lines already in the log (and its rotated files); each record identical to
    one of them is consumed instead of written. While ``muted`` (the stage rebuilding its state) no new
    line is written at all.
    """

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self.muted = False
        self._existing: Counter[bytes] = Counter()
        files = [log.backup_path(n) for n in range(log.backups, 0, -1)] + [log.path]
        for path in files:
            if path.is_file():
                with path.open("rb") as fh:
                    for line in fh:
                        if line.strip():
                            self._existing[_fingerprint(line)] += 1
        self.resumed = sum(self._existing.values())

    def write(self, record: Mapping[str, Any]) -> None:
        fp = _fingerprint(_line(record))
        if self._existing[fp] > 0:
            self._existing[fp] -= 1
            return
        if not self.muted:
            self.log.write(record)

    def close(self) -> None:
        self.log.close()


class OmsHooks(ServiceHooks):
    """Latency and order metrics; the Redis snapshot and metrics stream after each round."""

    def __init__(self, metrics: StageMetrics, manager: OrderManager, audit: ResumableAudit,
                 writes: GuardedWrites, clock: ReplayClock) -> None:
        super().__init__(metrics)
        self.manager = manager
        self.audit = audit
        self.writes = writes
        self.clock = clock
        self._intent_seen: dict[str, float] = {}
        self._dirty = False
        self._changed = False
        self._snapshot_pending = False

    def replaying(self, active: bool) -> None:
        self.audit.muted = active
        if not active:
            self._dirty = self._changed = True
            self.round_completed(-1, 0)

    def handled(self, topic: str, event: Event, outputs: list[Output], seconds: float) -> None:
        super().handled(topic, event, outputs, seconds)
        self._dirty = True
        m = self.metrics
        if isinstance(event, SignalIntent):
            self._intent_seen[event.id] = time.perf_counter()
            if len(self._intent_seen) > 10_000:
                self._intent_seen.pop(next(iter(self._intent_seen)))
        elif isinstance(event, OrderRequest) and outputs:
            seen = self._intent_seen.pop(event.intent_id, None)
            if seen is not None:
                m.observe(m.intent_to_order, time.perf_counter() - seen)
            age = self.root_age_s(event.ts)
            if age is not None:
                m.observe(m.tick_to_order, age)
        for out in outputs:
            self._changed = True
            if isinstance(out.event, OrderEvent):
                m.orders.labels(m.stage, out.event.status).inc()

    def round_completed(self, number: int, root_wall_ns: int) -> None:
        super().round_completed(number, root_wall_ns)
        mgr, m = self.manager, self.metrics
        m.kill_switch.labels(m.stage).set(1 if mgr.kill_switch_engaged else 0)
        if self._dirty:
            m.pnl.labels(m.stage, "realized").set(mgr.positions.realized())
            m.pnl.labels(m.stage, "unrealized").set(mgr.positions.unrealized())
            self._snapshot_pending = True
            self._dirty = False
        if self._snapshot_pending:
            self.write_state()

    def write_state(self) -> None:
        """The snapshot (and, when something changed, a metrics record) to Redis; retried later if it fails."""
        snapshot = self.manager.snapshot()
        payload = orjson.dumps(snapshot)
        changed = self._changed

        def write(state: Any) -> None:
            state.set(keys.POSITIONS, payload)
            if changed:
                record = {k: snapshot[k] for k in ("ts", "flat", "realized_pnl", "unrealized_pnl")}
                record.update(open_orders=len(snapshot["orders"]), positions=len(snapshot["positions"]),
                              kill_switch=snapshot["kill_switch"]["engaged"])
                state.append(keys.OMS_METRICS_STREAM, orjson.dumps(record))

        if self.writes.attempt("oms snapshot", write):
            self._snapshot_pending = False
            self._changed = False
