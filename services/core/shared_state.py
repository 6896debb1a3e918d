"""The shared-state schema: every StateStore (Redis) value that more than one component reads.

One msgspec Struct per value, one encoder and one decoder per key, so writers and readers cannot
drift apart and every reader is exactly as lenient as every other:

- ``keys.KILL_SWITCH``: :class:`KillSwitchState`, written by risk, the operator and the console,
  read by all three;
- ``keys.KILL_SWITCH_AUDIT``: a stream of :class:`KillSwitchAudit`, one entry per engage or release
  asked for at the console (written or refused: who, when, why), read by the console;
- ``keys.INGEST_HEARTBEAT``: :class:`IngestHeartbeat`, written by the ingest, read by risk and the
  console;
- ``keys.POSITIONS``: :class:`OmsSnapshot` (:class:`OrderLegState`, :class:`PositionState`), written
  by the OMS, read by the operator (is the book flat?) and the console;
- ``keys.FLATTEN_REQUEST``: :class:`FlattenRequest`, written by the operator, read by the OMS;
- ``keys.FLATTEN_ACK``: :class:`FlattenAck`, written by the OMS once it acted on a request, read by
  the OMS after a restart (so a nonce is never acted on twice);
- ``keys.LEARNER_VIEW``: :class:`LearnerView` (:class:`LearnerArmView`, :class:`LearnerModelView`,
  :class:`ChangePointView`), written by the learner stage on every update, read by the console.

The learner's saved state (``keys.LEARNER_STATE``) is not here: only the learner reads it
(:mod:`services.learner.stage`).

Leniency is decided here, once: the kill switch accepts the minimal form an operator may type,
``{"engaged": true}`` (an empty or missing ``reason`` means ``Manual`` when engaged, an empty or
missing ``source`` means ``operator``, a missing ``ts`` is 0); a flatten request needs only its
``nonce``; the heartbeat's ``seq`` defaults to 0. Everything else is required and type-checked;
unknown fields are ignored (a newer writer may add some). The OMS snapshot has no defaults at all:
a reader deciding "is the book flat?" must never mistake a missing ``orders`` list for an empty one.

Decoding failures raise :class:`SharedStateError` (a ValueError) whose one-line message names the
key and, for a wrong field, its path (``$.orders[0].status``).

This module is pure: no stage package, no Redis or Kubernetes client.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, TypeVar

import msgspec

from services.core import keys
from services.core.events import Nanos, OrderStatus, Side
from services.core.learner_policy import LearnerPolicy

MANUAL: Final = "Manual"  # kill-switch reason of a manual engage
OPERATOR: Final = "operator"  # source of a flag written without one

LegKind = Literal["entry", "take_profit", "stop_loss", "flatten"]
TERMINAL_ORDER_STATUSES: Final[frozenset[OrderStatus]] = frozenset({"filled", "canceled", "rejected", "expired"})

NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
Nonce = Annotated[str, msgspec.Meta(min_length=1)]


class SharedStateError(ValueError):
    """A shared-state value could not be decoded; ``key`` names it, ``reason`` says why."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = " ".join(reason.split())
        super().__init__(f"{key}: {self.reason}")


# --- the kill switch ---------------------------------------------------------------------------


class KillSwitchState(msgspec.Struct, frozen=True):
    """The session's kill-switch flag: engaged or not, why, since when (ns) and who set it."""

    engaged: bool
    reason: str = ""
    ts: Nanos = 0
    source: str = ""


class _KillSwitchWire(msgspec.Struct, frozen=True):
    """The flag as it may be typed by hand (reason and source may be missing, empty or null)."""

    engaged: bool
    reason: str | None = None
    ts: Nanos = 0
    source: str | None = None


RELEASED: Final = KillSwitchState(False)

AuditAction = Literal["engage", "release"]
AuditOutcome = Literal["written", "refused"]


class KillSwitchAudit(msgspec.Struct, frozen=True):
    """One engage or release asked for by a person: who (``user``, ``role``), when (``ts``, ns), why
    (``why``, their words), what happened (``outcome``; ``detail`` says why a refusal was refused), the
    flag's ``reason`` written or found, and the writer (``source``, e.g. ``console``)."""

    ts: Nanos
    action: AuditAction
    outcome: AuditOutcome
    user: str
    role: str
    why: str
    reason: str = ""
    detail: str = ""
    source: str = ""

# --- the ingest heartbeat ----------------------------------------------------------------------


class IngestHeartbeat(msgspec.Struct, frozen=True):
    """The ingest's heartbeat: event time (ns) of the newest market data and its sequence number."""

    ts: Nanos
    seq: NonNegInt = 0


# --- the OMS snapshot --------------------------------------------------------------------------


class OmsKillSwitch(msgspec.Struct, frozen=True):
    """The kill switch as the OMS applies it (from the commands it handled)."""

    engaged: bool
    reason: str


class OrderLegState(msgspec.Struct, frozen=True):
    """One order leg at the broker, as the OMS's order book holds it."""

    order_id: str
    client_order_id: str
    underlying: str
    contract: str
    leg: LegKind
    side: Side
    status: OrderStatus
    quantity: NonNegInt
    filled_quantity: NonNegInt
    limit_price: float | None
    stop_price: float | None

    @property
    def working(self) -> bool:
        """Not filled, canceled, rejected or expired."""
        return self.status not in TERMINAL_ORDER_STATUSES


class PositionState(msgspec.Struct, frozen=True):
    """Net holding of one contract (positive long, negative short) with its PnL in USD."""

    underlying: str
    contract: str
    quantity: int
    avg_price: float
    mark: float | None
    realized_pnl: float
    unrealized_pnl: float
    fees: float


class OmsSnapshot(msgspec.Struct, frozen=True):
    """The OMS's orders, positions and PnL (``OrderManager.snapshot_state``), written after each batch."""

    ts: Nanos
    broker: str
    kill_switch: OmsKillSwitch
    flat: bool
    orders: tuple[OrderLegState, ...]
    positions: tuple[PositionState, ...]
    realized_pnl: float
    unrealized_pnl: float

    @property
    def working_orders(self) -> tuple[OrderLegState, ...]:
        """Orders not in a terminal status."""
        return tuple(o for o in self.orders if o.working)

    @property
    def open_positions(self) -> tuple[PositionState, ...]:
        """Positions with a non-zero quantity."""
        return tuple(p for p in self.positions if p.quantity != 0)


# --- flatten requests --------------------------------------------------------------------------


class FlattenRequest(msgspec.Struct, frozen=True):
    """A one-shot ask to the OMS to flatten every position; acted on once per ``nonce``."""

    nonce: Nonce
    ts: Nanos = 0
    source: str = ""


class FlattenAck(msgspec.Struct, frozen=True):
    """The flatten request the OMS acted on last: its ``nonce`` and the RiskCommand id it published."""

    nonce: Nonce
    command: str
    ts: Nanos


# --- the learner's view ------------------------------------------------------------------------


class LearnerArmView(msgspec.Struct, frozen=True):
    """One bandit arm (playbook in a context bucket): its Beta(alpha, beta) posterior and the trades
    that pulled it (alpha + beta - 2 with win/loss rewards and no discount)."""

    playbook: str
    bucket: str
    alpha: Annotated[float, msgspec.Meta(ge=1.0)]
    beta: Annotated[float, msgspec.Meta(ge=1.0)]
    pulls: Annotated[float, msgspec.Meta(ge=0.0)]

    @property
    def mean(self) -> float:
        """Posterior mean win probability alpha / (alpha + beta)."""
        return self.alpha / (self.alpha + self.beta)


class LearnerModelView(msgspec.Struct, frozen=True):
    """The model in force: its id and version, its metrics, and the exit times (ns, 0: unknown) of the
    first and last trades it learned from."""

    id: str
    version: NonNegInt
    trades: NonNegInt
    metrics: dict[str, float]
    trained_from: Nanos = 0
    trained_through: Nanos = 0


class ChangePointView(msgspec.Struct, frozen=True):
    """One reported change point: when (ns), where, the regime it named and the one before."""

    ts: Nanos
    underlying: str
    regime: str
    previous: str
    score: float


class LearnerView(msgspec.Struct, frozen=True):
    """What the learner knows, for people: arms, the model in force, each underlying's regime and
    the newest change points (oldest first); ``mode`` is the session's learner mode."""

    ts: Nanos
    mode: str
    model: LearnerModelView | None
    arms: tuple[LearnerArmView, ...]
    regimes: dict[str, str]
    change_points: tuple[ChangePointView, ...]


def policy_arms(policy: LearnerPolicy) -> tuple[LearnerArmView, ...]:
    """A policy's arms as Beta(1 + wins, 1 + losses) posteriors pulled wins + losses times."""
    return tuple(LearnerArmView(a.playbook, a.bucket, 1.0 + a.wins, 1.0 + a.losses, a.wins + a.losses)
                 for a in sorted(policy.arms, key=lambda a: (a.playbook, a.bucket)))


def policy_model(policy: LearnerPolicy, model_id: str = "policy", trained_from: int = 0) -> LearnerModelView:
    """A policy as the model in force: its exploration settings and each meta model's trades and
    win rate (``<playbook>.trades``, ``<playbook>.win_rate``; ``*`` is the pooled model)."""
    metrics: dict[str, float] = {"epsilon": policy.epsilon, "abstain_value": policy.abstain_value}
    for m in sorted(policy.meta, key=lambda m: m.playbook):
        metrics[f"{m.playbook}.trades"] = float(m.trades)
        metrics[f"{m.playbook}.win_rate"] = m.win_rate
    return LearnerModelView(model_id, policy.version, policy.trades, metrics, trained_from, policy.trained_through)


SharedValue = (
    KillSwitchState | KillSwitchAudit | IngestHeartbeat | OmsSnapshot | FlattenRequest | FlattenAck | LearnerView
)

# --- codecs ------------------------------------------------------------------------------------

T = TypeVar("T")

_ENCODER: Final = msgspec.json.Encoder()
_KILL_SWITCH: Final = msgspec.json.Decoder(_KillSwitchWire)
_KILL_SWITCH_AUDIT: Final = msgspec.json.Decoder(KillSwitchAudit)
_HEARTBEAT: Final = msgspec.json.Decoder(IngestHeartbeat)
_OMS_SNAPSHOT: Final = msgspec.json.Decoder(OmsSnapshot)
_FLATTEN_REQUEST: Final = msgspec.json.Decoder(FlattenRequest)
_FLATTEN_ACK: Final = msgspec.json.Decoder(FlattenAck)
_LEARNER_VIEW: Final = msgspec.json.Decoder(LearnerView)


def encode(value: SharedValue) -> bytes:
    """Compact JSON of ``value``, fields in declaration order (what every writer stores)."""
    return _ENCODER.encode(value)


def _decode(decoder: msgspec.json.Decoder[T], raw: bytes | str, key: str) -> T:
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise SharedStateError(key, str(exc)) from None
    except msgspec.DecodeError as exc:
        raise SharedStateError(key, f"not JSON ({str(exc).removeprefix('JSON is malformed: ')})") from None


def decode_kill_switch(raw: bytes | str) -> KillSwitchState:
    """The flag under ``keys.KILL_SWITCH``; ``{"engaged": true}`` alone means Manual, by the operator."""
    wire = _decode(_KILL_SWITCH, raw, keys.KILL_SWITCH)
    return KillSwitchState(
        engaged=wire.engaged,
        reason=wire.reason or (MANUAL if wire.engaged else ""),
        ts=wire.ts,
        source=wire.source or OPERATOR,
    )


def decode_kill_switch_audit(raw: bytes | str) -> KillSwitchAudit:
    """One entry of the ``keys.KILL_SWITCH_AUDIT`` stream."""
    return _decode(_KILL_SWITCH_AUDIT, raw, keys.KILL_SWITCH_AUDIT)


def decode_heartbeat(raw: bytes | str) -> IngestHeartbeat:
    """The heartbeat under ``keys.INGEST_HEARTBEAT``."""
    return _decode(_HEARTBEAT, raw, keys.INGEST_HEARTBEAT)


def decode_oms_snapshot(raw: bytes | str) -> OmsSnapshot:
    """The OMS snapshot under ``keys.POSITIONS`` (every field required)."""
    return _decode(_OMS_SNAPSHOT, raw, keys.POSITIONS)


def decode_flatten_request(raw: bytes | str) -> FlattenRequest:
    """The flatten request under ``keys.FLATTEN_REQUEST``."""
    return _decode(_FLATTEN_REQUEST, raw, keys.FLATTEN_REQUEST)


def decode_flatten_ack(raw: bytes | str) -> FlattenAck:
    """The OMS's acknowledgement under ``keys.FLATTEN_ACK``."""
    return _decode(_FLATTEN_ACK, raw, keys.FLATTEN_ACK)


def decode_learner_view(raw: bytes | str) -> LearnerView:
    """The learner's view under ``keys.LEARNER_VIEW``."""
    return _decode(_LEARNER_VIEW, raw, keys.LEARNER_VIEW)
