"""What a fill costs: commission plus pass-through regulatory fees, per contract (Tradier-like).

For a fill of ``q`` contracts at premium ``p`` (multiplier ``m``)::

    commission  = commission_per_contract * q
    orf         = orf_per_contract * q                       (buys and sells)
    occ         = min(occ_per_contract * q, occ_cap_per_order)
    index fee   = index_fee_per_contract * q                 (cash-settled index roots only)
    taf         = taf_per_contract * q                       (sells only)
    sec         = sec_fee_rate * p * q * m                   (sells only)
    total       = round_half_up(sum, cents)

An expiry settlement (cash settlement or exercise) pays ``exercise_fee_per_contract * q`` only.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal

from services.core.events import Side
from services.oms.config import DEFAULT_CASH_SETTLED_ROOTS, FeeSchedule

_CENT = Decimal("0.01")


def round_cents(amount: float) -> float:
    """Round a dollar amount to the cent, halves away from zero (how brokers round fee lines)."""
    return float(Decimal(repr(amount)).quantize(_CENT, rounding=ROUND_HALF_UP))


class FeeModel:
    """Computes the fees of one fill or settlement from a :class:`FeeSchedule`."""

    def __init__(
        self,
        schedule: FeeSchedule | None = None,
        multiplier: int = 100,
        index_roots: Iterable[str] = DEFAULT_CASH_SETTLED_ROOTS,
    ) -> None:
        self.schedule = schedule or FeeSchedule()
        self.multiplier = multiplier
        self.index_roots = frozenset(index_roots)

    def fill(self, root: str, side: Side, quantity: int, price: float) -> float:
        """Total fees in USD of a fill of ``quantity`` contracts of ``root`` at ``price``."""
        if quantity <= 0:
            return 0.0
        s = self.schedule
        total = (s.commission_per_contract + s.orf_per_contract) * quantity
        total += min(s.occ_per_contract * quantity, s.occ_cap_per_order)
        if root in self.index_roots:
            total += s.index_fee_per_contract * quantity
        if side == "sell":
            total += s.taf_per_contract * quantity
            total += s.sec_fee_rate * price * quantity * self.multiplier
        return round_cents(total)

    def settlement(self, quantity: int) -> float:
        """Fees in USD of exercising or cash-settling ``quantity`` contracts at expiry."""
        return round_cents(self.schedule.exercise_fee_per_contract * max(quantity, 0))
