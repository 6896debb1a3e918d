"""The OMS's own gate in front of the broker: risk's approval, then the hard limits, checked again.

Risk is the guardrail, but the ``orders`` topic is a way in: anything that can write it could trade.
So before an OrderRequest reaches the :class:`~services.oms.engine.OrderManager` the
:class:`ExecutionGate` checks, from the OMS's own book:

1. ``approval``: risk's HMAC over the request verifies under the session's key
   (:mod:`services.core.approval`);
2. ``max_contracts_per_order``: the request's quantity;
3. ``premium_per_symbol`` / ``premium_total``: premium at risk (held positions at their average price,
   live entries at their limit — for a sell, the stop when higher, as risk counts it) plus this
   request's, against risk's caps;
4. ``max_open_positions``: distinct contracts held or being entered, if the request opens another.

The caps are risk's (``risk.yaml`` with the session's overrides) at the most the calibration
multiplier could make them (``risk_multiplier_max``), so an order risk approved is never refused here
while the two agree on the book. The kill switch is the OrderManager's own (it rejects entries while
engaged). A refused request never reaches the OrderManager: the stage raises
:class:`~services.core.dlq.InputRefusedError`, which the transport dead-letters with this reason.
A request the OMS has already taken (a redelivery) passes to the OrderManager, which drops duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.core.approval import ApprovalKey
from services.core.events import OrderRequest
from services.oms.engine import OrderManager, client_id


@dataclass(frozen=True, slots=True)
class HardLimits:
    """The caps the OMS enforces whatever the request says (USD; contracts)."""

    max_contracts_per_order: int
    max_premium_per_symbol_usd: float
    max_premium_total_usd: float
    max_open_positions: int
    contract_multiplier: int = 100


@dataclass(frozen=True, slots=True)
class GateRefusal:
    """Why the OMS will not execute a request: ``rule`` names the check."""

    rule: str
    reason: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.reason}"


def _cents(usd: float) -> int:
    return round(usd * 100)


def unit_risk(request: OrderRequest, multiplier: int) -> float:
    """Premium at risk of one contract of ``request`` (risk's own measure)."""
    price = request.limit_price if request.side == "buy" else max(request.limit_price, request.stop_loss)
    return price * multiplier


class ExecutionGate:
    """Risk's approval and the hard limits, checked against one OrderManager's book."""

    def __init__(self, key: ApprovalKey, limits: HardLimits) -> None:
        self.key = key
        self.limits = limits

    def check(self, request: OrderRequest, manager: OrderManager) -> GateRefusal | None:
        """None when the request may go to the OrderManager; otherwise the first check it fails."""
        why = self.key.verify(request)
        if why is not None:
            return GateRefusal("approval", f"order request {request.id} {why}")
        if client_id(request.id) in manager.book.brackets:
            return None  # taken already: the OrderManager drops the duplicate
        lim = self.limits
        if request.quantity > lim.max_contracts_per_order:
            return GateRefusal("max_contracts_per_order",
                               f"order request {request.id} for {request.quantity} contracts exceeds the "
                               f"{lim.max_contracts_per_order}-contract cap")
        adds = request.quantity * unit_risk(request, lim.contract_multiplier)
        held, entering = self._exposure(manager)
        symbol = held.get(request.underlying, {})
        symbol_at_risk = sum(symbol.values()) + sum(v for (u, _c), v in entering.items() if u == request.underlying)
        total_at_risk = sum(sum(c.values()) for c in held.values()) + sum(entering.values())
        for rule, used, cap, scope in (
            ("premium_per_symbol", symbol_at_risk, lim.max_premium_per_symbol_usd, f"on {request.underlying}"),
            ("premium_total", total_at_risk, lim.max_premium_total_usd, "in total"),
        ):
            if _cents(used + adds) > _cents(cap):
                return GateRefusal(rule, f"order request {request.id} would put {used + adds:.2f} USD of premium at "
                                         f"risk {scope} (cap {cap:.2f} USD, {used:.2f} USD already)")
        contracts = {c for per in held.values() for c in per} | {c for _u, c in entering}
        if request.contract not in contracts and len(contracts) >= lim.max_open_positions:
            return GateRefusal("max_open_positions", f"order request {request.id} would open a position while "
                                                     f"{len(contracts)} are open or being entered "
                                                     f"(max {lim.max_open_positions})")
        return None

    def _exposure(self, manager: OrderManager) -> tuple[dict[str, dict[str, float]], dict[tuple[str, str], float]]:
        """Premium at risk held (underlying -> contract -> USD) and being entered ((underlying, contract) -> USD)."""
        mult = self.limits.contract_multiplier
        held: dict[str, dict[str, float]] = {}
        for pos in manager.positions.positions.values():
            if pos.quantity != 0:
                held.setdefault(pos.underlying, {})[pos.contract] = abs(pos.quantity) * pos.avg_price * mult
        entering: dict[tuple[str, str], float] = {}
        for bracket in manager.book.brackets.values():
            leg = manager.book.legs.get(bracket.entry_id) if bracket.entry_id is not None else None
            if leg is None or leg.is_terminal or leg.leaves <= 0:
                continue
            key = (bracket.request.underlying, bracket.request.contract)
            entering[key] = entering.get(key, 0.0) + leg.leaves * unit_risk(bracket.request, mult)
        return held, entering
