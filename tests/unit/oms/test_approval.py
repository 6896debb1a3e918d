"""The OMS's own gate: only requests carrying risk's approval and fitting the hard limits reach the
broker; every other one is refused with its rule, audited, and changes nothing."""

from __future__ import annotations

import msgspec
import pytest

from services.core import topics
from services.core.approval import ApprovalKey
from services.core.dlq import InputRefusedError
from services.core.events import OrderEvent, OrderRequest, RiskCommand
from services.oms.approval import ExecutionGate, HardLimits
from services.oms.stage import OmsStage
from tests.unit.oms.support import NS, SPY_C620, SPY_P615, T0, Harness, make_request

KEY = ApprovalKey(b"risk-approval-key-for-tests-0123456789", "test")
LIMITS = HardLimits(max_contracts_per_order=10, max_premium_per_symbol_usd=2000.0, max_premium_total_usd=5000.0,
                    max_open_positions=1, contract_multiplier=100)


class Oms:
    """An OmsStage over the harness's OrderManager and paper broker, with the gate."""

    def __init__(self, limits: HardLimits = LIMITS) -> None:
        self.h = Harness()
        self.stage = OmsStage(self.h.oms, self.h.clock, gate=ExecutionGate(KEY, limits))

    def send(self, request: OrderRequest) -> list[OrderEvent]:
        out = self.stage.handle(topics.ORDERS, request)
        return [o.event for o in out if isinstance(o.event, OrderEvent)]

    def refused(self, request: OrderRequest) -> InputRefusedError:
        with pytest.raises(InputRefusedError) as info:
            self.stage.handle(topics.ORDERS, request)
        return info.value

    def audit(self, kind: str) -> list[str]:
        return [str(r["id"]) for r in self.h.audit.records if r["kind"] == kind]


def forged(rid: str = "forged", quantity: int = 500) -> OrderRequest:
    return make_request(rid, SPY_C620, quantity, 1.50, 2.00, 1.00)


def test_a_forged_request_for_500_contracts_never_reaches_the_broker() -> None:
    oms = Oms()
    refusal = oms.refused(forged())
    assert refusal.rule == "approval"
    assert refusal.detail == "approval: order request forged carries no risk approval"
    assert oms.h.broker.open_orders() == [] and oms.h.oms.book.brackets == {}
    assert oms.audit("order_refused") == ["forged"] and oms.audit("order_request") == []


@pytest.mark.parametrize("approval", ["0" * 64, "f" * 64])
def test_a_made_up_approval_is_refused(approval: str) -> None:
    oms = Oms()
    refusal = oms.refused(msgspec.structs.replace(forged(), approval=approval))
    assert refusal.rule == "approval" and "does not match" in refusal.detail
    assert oms.h.broker.open_orders() == []


def test_an_approved_request_altered_on_the_way_is_refused() -> None:
    oms = Oms()
    signed = KEY.sign(forged(quantity=1))
    refusal = oms.refused(msgspec.structs.replace(signed, quantity=500))
    assert refusal.rule == "approval" and oms.h.broker.open_orders() == []


def test_a_request_signed_with_another_key_is_refused() -> None:
    oms = Oms()
    other = ApprovalKey(b"someone-elses-key-0123456789abcdef", "other")
    assert oms.refused(other.sign(forged(quantity=1))).rule == "approval"


def test_an_approved_request_within_the_limits_is_executed() -> None:
    oms = Oms()
    events = oms.send(KEY.sign(forged("ok", quantity=2)))
    assert [e.status for e in events if e.leg == "entry"][:1] in (["accepted"], ["working"])
    assert len(oms.h.broker.open_orders()) >= 1 and oms.audit("order_request") == ["ok"]


def test_the_contract_cap_is_rechecked_even_with_a_valid_approval() -> None:
    oms = Oms()
    refusal = oms.refused(KEY.sign(forged()))
    assert refusal.rule == "max_contracts_per_order"
    assert refusal.detail.endswith("for 500 contracts exceeds the 10-contract cap")
    assert oms.h.broker.open_orders() == []


def test_premium_caps_are_rechecked_from_the_oms_book() -> None:
    oms = Oms(HardLimits(10, 2000.0, 5000.0, 5))
    # 8 x 2.50 x 100 = 2000.00: exactly the per-symbol cap passes (to the cent) ...
    oms.send(KEY.sign(make_request("a", SPY_C620, 8, 2.50, 3.00, 2.00)))
    # ... and one more contract of anything on SPY does not.
    refusal = oms.refused(KEY.sign(make_request("b", SPY_P615, 1, 0.50, 1.00, 0.25)))
    assert refusal.rule == "premium_per_symbol"
    assert "would put 2050.00 USD of premium at risk on SPY (cap 2000.00 USD, 2000.00 USD already)" in refusal.detail


def test_a_sell_counts_its_stop_as_premium_at_risk() -> None:
    oms = Oms(HardLimits(10, 1000.0, 5000.0, 5))
    sell = make_request("s", SPY_C620, 4, 1.00, 0.50, 3.00, side="sell")  # 4 x 3.00 x 100 = 1200 > 1000
    assert oms.refused(KEY.sign(sell)).rule == "premium_per_symbol"


def test_open_positions_are_rechecked() -> None:
    oms = Oms()  # max_open_positions 1
    oms.send(KEY.sign(make_request("a", SPY_C620, 1, 1.00, 2.00, 0.50)))
    refusal = oms.refused(KEY.sign(make_request("b", SPY_P615, 1, 1.00, 2.00, 0.50)))
    assert refusal.rule == "max_open_positions"
    assert "while 1 are open or being entered (max 1)" in refusal.detail
    # Adding to the contract already being entered opens no new position.
    oms.send(KEY.sign(make_request("c", SPY_C620, 1, 1.00, 2.00, 0.50)))
    assert oms.audit("order_request") == ["a", "c"]


def test_the_kill_switch_rejects_approved_entries() -> None:
    oms = Oms()
    oms.stage.handle(topics.RISK_COMMANDS, RiskCommand(ts=T0, id="k", underlying="*", action="engage_kill_switch",
                                                       reason="test"))
    events = oms.send(KEY.sign(forged("after-kill", quantity=1)))
    assert [(e.status, e.reason) for e in events] == [("rejected", "kill switch engaged: test")]
    assert oms.h.broker.open_orders() == []


def test_a_refused_request_does_not_move_the_oms_clock() -> None:
    oms = Oms()
    before = oms.h.clock.now_ns()
    oms.refused(make_request("future", SPY_C620, 1, 1.0, 2.0, 0.5, ts=T0 + 365 * 86_400 * NS))
    assert oms.h.clock.now_ns() == before


def test_a_redelivered_request_passes_the_gate_and_is_dropped_as_a_duplicate() -> None:
    oms = Oms()
    signed = KEY.sign(make_request("a", SPY_C620, 1, 1.00, 2.00, 0.50))
    oms.send(signed)
    assert oms.send(signed) == []
    assert oms.audit("duplicate_request") == ["a"]
