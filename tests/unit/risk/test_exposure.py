"""Exposure is aggregated per contract and per underlying over every playbook; the summary counts refusals."""

from __future__ import annotations

import pytest

from services.app.market_data import load_market_data
from services.backtest.main import run_backtest
from services.core.datasets import SPY_1MIN
from services.core.events import OrderRequest, RiskRejection
from services.core.session_config import SessionConfig
from services.risk.config import RiskConfig
from tests.realdata import require_real

from .support import MIN, T0, Harness

CONTRACT = "SPY250708C00620000"
OTHER = "SPY250708C00621000"


def test_a_second_playbook_cannot_double_a_contract() -> None:
    h = Harness(RiskConfig(max_contracts_per_contract=5, max_contracts_per_underlying=8))
    a = h.intent("a", T0, playbook="orb", quantity=5)
    assert isinstance(a, OrderRequest) and a.quantity == 5
    # Same bar, another playbook, same contract: 5 working already, cap 5 -> nothing fits.
    b = h.intent("b", T0, playbook="vwap_reclaim", quantity=5)
    assert isinstance(b, RiskRejection) and b.rule == "contracts_per_contract"
    assert "5 held or being entered" in b.reason
    # Filled and confirmed as a 5-lot position: still 5 in the contract.
    h.order_event(a.id, T0 + MIN, "filled", 5, filled=5)
    h.position(CONTRACT, T0 + MIN, 5, 2.0)
    c = h.intent("c", T0 + 2 * MIN, playbook="trend", quantity=2)
    assert isinstance(c, RiskRejection) and c.rule == "contracts_per_contract"
    # Another contract of the same underlying: 5 held, cap 8 on SPY -> a 5-lot is cut to 3.
    d = h.intent("d", T0 + 3 * MIN, playbook="trend", quantity=5, contract=OTHER)
    assert isinstance(d, OrderRequest) and d.quantity == 3
    e = h.intent("e", T0 + 4 * MIN, playbook="orb2", quantity=1, contract="SPY250708P00610000")
    assert isinstance(e, RiskRejection) and e.rule == "contracts_per_underlying"
    assert h.engine.contracts_at_risk(underlying="SPY") == 8
    assert h.engine.contracts_at_risk(contract=CONTRACT) == 5


def test_reject_mode_refuses_instead_of_shrinking() -> None:
    h = Harness(RiskConfig(max_contracts_per_contract=4, sizing_mode="reject"))
    a = h.intent("a", T0, quantity=3)
    assert isinstance(a, OrderRequest)
    b = h.intent("b", T0, playbook="other", quantity=2)
    assert isinstance(b, RiskRejection) and b.rule == "contracts_per_contract"
    assert isinstance(h.intent("c", T0, playbook="third", quantity=1), OrderRequest)


def test_null_caps_turn_the_rules_off() -> None:
    h = Harness(RiskConfig(max_contracts_per_contract=None, max_contracts_per_underlying=None))
    assert isinstance(h.intent("a", T0, quantity=5), OrderRequest)
    assert isinstance(h.intent("b", T0, playbook="other", quantity=5), OrderRequest)


@pytest.mark.realdata
def test_on_the_real_spy_recording_a_doubled_contract_is_refused_and_counted() -> None:
    data = load_market_data(["SPY"], require_real(SPY_1MIN))
    result = run_backtest(SessionConfig(symbols=("SPY",), calibration={"path": None}), data)
    rec = result.record
    refused = [r for r in rec.rejections if r.rule == "contracts_per_contract"]
    assert refused, "the shipped risk.yaml must refuse the second entry into a held contract"
    intents = {i.id: i for i in rec.intents}
    approved = {o.intent_id: o for o in rec.orders}
    for r in refused:
        intent = intents[r.intent_id]
        # Independently of risk's book: an approved order in that contract came first and its round trip
        # was still open then (5 contracts, the shipped per-contract cap).
        earlier = [o for o in rec.orders if o.contract == intent.contract and o.ts <= intent.ts]
        live = [t for t in rec.outcomes if t.contract == intent.contract and t.exit_ts > intent.ts
                and t.entry_ts <= intent.ts + MIN]
        assert earlier and live and sum(o.quantity for o in earlier[-1:]) == 5
        assert r.intent_id not in approved
    counts: dict[str, int] = {}
    for r in rec.rejections:
        counts[r.rule] = counts.get(r.rule, 0) + 1
    assert result.summary["risk_rejections_by_rule"] == counts
    assert result.summary["risk_rejections"] == sum(counts.values())
