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

Flatten requests: the operator (a TradingSession's ``flattenNonce``, or its finalizer before a live
session may go) writes ``dreambot:flatten_request`` (:class:`~services.core.shared_state.FlattenRequest`).
After a round or batch, at most once a second of wall time, the OMS reads it and, for a nonce it has
not acted on, publishes a ``flatten`` RiskCommand for every underlying on its own input topic
``risk_commands`` (:meth:`OmsHooks.check_flatten_request` says why a command rather than a direct
call), then records the nonce under ``dreambot:flatten_ack``. Handling that command flattens the
book like any other command, and the snapshot written after that batch reports the result.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson

from services.core import keys, shared_state, topics
from services.core.clock import ReplayClock
from services.core.events import Event, OrderEvent, OrderRequest, RiskCommand, SignalIntent
from services.core.logs import redact
from services.core.metrics import StageMetrics
from services.core.shared_state import FlattenAck, FlattenRequest, SharedStateError
from services.core.stage import Output
from services.core.state import StateStore
from services.oms.audit import AuditLog
from services.oms.brokers.tradier import ERROR_KINDS, ErrorKind, TradierBroker
from services.oms.engine import ALL_UNDERLYINGS, OrderManager, client_id
from services.runtime.kafka_bus import BusError, FatalBusError
from services.runtime.service import GuardedWrites, ServiceHooks

log = logging.getLogger(__name__)

FLATTEN_CHECK_S: Final = 1.0  # wall seconds between reads of the flatten request
FLATTEN_COMMAND_PREFIX: Final = "flatten_request:"


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


def flatten_command(request: FlattenRequest, ts: int) -> RiskCommand:
    """The RiskCommand that carries out ``request``: flatten every bracket on every underlying (cancel
    its working legs, close what it holds at market). Its id comes from the nonce alone, so the
    OrderManager acts on it once however often it is published (commands are idempotent by id)."""
    return RiskCommand(
        ts=ts,
        id=client_id(f"{FLATTEN_COMMAND_PREFIX}{request.nonce}"),
        underlying=ALL_UNDERLYINGS,
        action="flatten",
        reason=f"flatten request {request.nonce} from {request.source or 'unknown'}",
    )


class OmsHooks(ServiceHooks):
    """Latency and order metrics; the Redis snapshot and metrics stream after each round; flatten
    requests (:meth:`check_flatten_request`).

    ``dreambot_reconciled`` is 0 until the start-up reconciliation found book and venue agreeing, and
    while they disagree; ``dreambot_broker_errors_total{kind}`` counts what the Tradier broker reports
    (:attr:`~services.oms.brokers.tradier.TradierBroker.on_error`).

    flatten_check_s / wall_s: how often (and by which monotonic clock, in seconds) the flatten
    request key is read.
    """

    def __init__(self, metrics: StageMetrics, manager: OrderManager, audit: ResumableAudit,
                 writes: GuardedWrites, clock: ReplayClock, *, flatten_check_s: float = FLATTEN_CHECK_S,
                 wall_s: Callable[[], float] = time.monotonic) -> None:
        super().__init__(metrics)
        self.manager = manager
        self.audit = audit
        self.writes = writes
        self.clock = clock
        self.flatten_check_s = flatten_check_s
        self._wall_s = wall_s
        self._intent_seen: dict[str, float] = {}
        self._dirty = False
        self._changed = False
        self._snapshot_pending = False
        self._flatten_checked: float | None = None  # wall_s() of the last read of the request
        self._acted: set[str] | None = None  # nonces acted on (None: FLATTEN_ACK not read yet)
        self._ack_pending: FlattenAck | None = None  # acted on, not yet recorded in Redis
        self._bad_request: bytes | None = None  # a malformed request already logged
        if isinstance(manager.broker, TradierBroker):
            manager.broker.on_error = self.broker_error
            for kind in ERROR_KINDS:  # every series exists at 0, so the first error is an increase
                metrics.broker_errors.labels(metrics.stage, kind)
        self.export_reconciled()

    def broker_error(self, kind: ErrorKind) -> None:
        """One failed venue request or refused order, counted by kind."""
        self.metrics.broker_errors.labels(self.metrics.stage, kind).inc()

    def export_reconciled(self) -> None:
        m = self.metrics
        m.reconciled.labels(m.stage).set(0 if self.manager.reconciliation.mismatch is not None else 1)

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
        self.export_reconciled()
        if self._dirty:
            m.pnl.labels(m.stage, "realized").set(mgr.positions.realized())
            m.pnl.labels(m.stage, "unrealized").set(mgr.positions.unrealized())
            self._snapshot_pending = True
            self._dirty = False
        if self._snapshot_pending:
            self.write_state()
        self.check_flatten_request()

    def write_state(self) -> None:
        """The snapshot (and, when something changed, a metrics record) to Redis; retried later if it fails."""
        snapshot = self.manager.snapshot_state()
        payload = shared_state.encode(snapshot)
        changed = self._changed

        def write(state: StateStore) -> None:
            state.set(keys.POSITIONS, payload)
            if changed:
                record = {"ts": snapshot.ts, "flat": snapshot.flat, "realized_pnl": snapshot.realized_pnl,
                          "unrealized_pnl": snapshot.unrealized_pnl, "open_orders": len(snapshot.orders),
                          "positions": len(snapshot.positions), "kill_switch": snapshot.kill_switch.engaged}
                state.append(keys.OMS_METRICS_STREAM, orjson.dumps(record))

        if self.writes.attempt("oms snapshot", write):
            self._snapshot_pending = False
            self._changed = False

    # --- flatten requests ----------------------------------------------------------------------

    def periodic(self) -> None:
        self.export_reconciled()
        self.check_flatten_request()

    def check_flatten_request(self) -> bool:
        """Act on the session's flatten request if it is new; True when a flatten command went out.

        Runs after every round or batch (:meth:`round_completed`), reads ``keys.FLATTEN_REQUEST`` at
        most every :attr:`flatten_check_s` of wall time and never while the stage rebuilds its state.
        A request whose nonce this OMS has not acted on becomes :func:`flatten_command`, published on
        ``risk_commands`` through the participant's publisher and flushed (broker-acknowledged); only
        then is the nonce recorded, in memory and under ``keys.FLATTEN_ACK``, which a restarted OMS
        reads first so it never acts on the same nonce twice. A failed read, publish or ack write is
        retried at the next check; a malformed request is logged once and ignored.

        Why a published command rather than calling the OrderManager from here: a hook cannot hand
        outputs to the participant, and the OMS's state must stay a function of its inputs. Published
        on its own input topic, the flatten is an input like an operator's RiskCommand: handled by the
        stage (its executions published, its audit written, the snapshot after that batch reporting
        the result), kept in the topic's history so a restarted OMS rebuilds the flattened book, and
        deduplicated by command id. Risk forwards it unchanged, as it does every protective command,
        and the OMS drops that copy. During a lockstep replay the command is, like any unannounced
        input, handled once the replay is complete. Without a participant (nowhere to publish) the
        request is left for later.
        """
        if self.audit.muted:
            return False
        now = self._wall_s()
        if self._flatten_checked is not None and now - self._flatten_checked < self.flatten_check_s:
            return False
        self._flatten_checked = now
        participant = self.participant
        if participant is None:
            return False
        raw = self._read_flatten_request()
        if self._ack_pending is not None:
            self._write_ack()
        if raw is None or self._acted is None:
            return False
        try:
            request = shared_state.decode_flatten_request(raw)
        except SharedStateError as exc:
            if raw != self._bad_request:
                self._bad_request = raw
                log.warning("flatten request ignored: malformed", extra={"error": str(exc)})
            return False
        if request.nonce in self._acted:
            return False
        command = flatten_command(request, self.clock.now_ns())
        try:
            participant.publisher.publish(topics.RISK_COMMANDS, command.underlying, command)
            participant.publisher.flush()
        except FatalBusError:
            raise
        except BusError as exc:
            log.warning("flatten command not published; will retry", extra={"nonce": request.nonce,
                                                                              "error": str(exc)})
            return False
        self._acted.add(request.nonce)
        self._ack_pending = FlattenAck(nonce=request.nonce, command=command.id, ts=time.time_ns())
        self._write_ack()
        log.info("flatten requested: command published", extra={"nonce": request.nonce, "command": command.id,
                                                                "source": request.source})
        return True

    def _read_flatten_request(self) -> bytes | None:
        """The request key's value (and, the first time, the acted-on nonce); None if Redis did not answer."""
        found: list[bytes | None] = []

        def read(state: StateStore) -> None:
            if self._acted is None:
                self._acted = self._acked_nonces(state.get(keys.FLATTEN_ACK))
            found.append(state.get(keys.FLATTEN_REQUEST))

        if not self.writes.attempt("flatten request", read) or not found:
            return None
        return found[0]

    @staticmethod
    def _acked_nonces(raw: bytes | None) -> set[str]:
        if raw is None:
            return set()
        try:
            return {shared_state.decode_flatten_ack(raw).nonce}
        except SharedStateError as exc:
            log.warning("flatten ack unreadable; treating every request as new", extra={"error": str(exc)})
            return set()

    def _write_ack(self) -> None:
        ack = self._ack_pending
        if ack is None:
            return
        payload = shared_state.encode(ack)
        if self.writes.attempt("flatten ack", lambda state: state.set(keys.FLATTEN_ACK, payload)):
            self._ack_pending = None
