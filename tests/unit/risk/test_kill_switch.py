"""Kill switch: daily loss limit, manual engage/release, operator-written key, StateStore outages."""

from __future__ import annotations

import json

from services.core import keys, shared_state
from services.core.events import OrderRequest, RiskCommand, RiskRejection
from services.core.state import MemoryState
from services.risk.config import RiskConfig
from services.risk.kill_switch import KillSwitch, KillSwitchState

from .support import MIN, NS, T0, FlakyState, Harness, make_intent


def _actions(cmds: list[RiskCommand]) -> list[tuple[str, str]]:
    return [(c.action, c.underlying) for c in cmds]


def _stored(state: object) -> dict[str, object]:
    raw = state.get(keys.KILL_SWITCH)  # type: ignore[attr-defined]
    assert raw is not None
    doc: dict[str, object] = json.loads(raw)
    return doc


def _command(cid: str, ts: int, action: str, underlying: str = "*", reason: str = "operator") -> RiskCommand:
    return RiskCommand(ts=ts, id=cid, underlying=underlying, action=action, reason=reason)  # type: ignore[arg-type]


def test_daily_loss_limit_engages_flattens_and_cancels() -> None:
    h = Harness(RiskConfig(max_daily_loss_usd=500, max_open_positions=10))
    assert isinstance(h.intent("a", T0, underlying="QQQ"), OrderRequest)
    h.outcome("o1", T0 + NS, -300.0)  # realized today
    h.position("SPY250708C00620000", T0 + 2 * NS, qty=2, avg=2.0, unrealized=-199.99)
    assert h.engine.daily_pnl() == -499.99
    assert h.engine.check(T0 + 2 * NS) == []  # 499.99 lost: limit not reached
    h.position("SPY250708C00620000", T0 + 3 * NS, qty=2, avg=2.0, unrealized=-200.0)
    cmds = h.engine.check(T0 + 3 * NS)
    assert _actions(cmds) == [
        ("engage_kill_switch", "*"),
        ("cancel", "QQQ"),
        ("flatten", "QQQ"),
        ("cancel", "SPY"),
        ("flatten", "SPY"),
    ]
    assert all(c.ts == T0 + 3 * NS for c in cmds)
    assert all(c.order_id is None for c in cmds)  # cancel = every working order of the underlying
    assert cmds[0].id == f"risk:engage_kill_switch:*:{T0 + 3 * NS}"
    assert "DailyLossLimit" in cmds[0].reason and "-500.00" in cmds[0].reason
    assert _stored(h.state) == {
        "engaged": True,
        "reason": "DailyLossLimit",
        "ts": T0 + 3 * NS,
        "source": "risk",
    }
    assert h.engine.check(T0 + 4 * NS) == []  # announced once
    r = h.intent("b", T0 + 5 * NS, contract="SPY250708P00600000")
    assert isinstance(r, RiskRejection) and r.rule == "kill_switch" and "DailyLossLimit" in r.reason


def test_daily_loss_rule_refuses_before_the_next_check() -> None:
    h = Harness(RiskConfig(max_daily_loss_usd=500))
    h.outcome("o1", T0, -500.0)
    r = h.intent("a", T0 + NS)
    assert isinstance(r, RiskRejection) and r.rule == "daily_loss_limit"


def test_marks_from_features_reprice_unrealized() -> None:
    h = Harness(RiskConfig(max_daily_loss_usd=400))
    h.position("SPY250708C00620000", T0, qty=2, avg=3.0, unrealized=0.0)
    h.features("SPY250708C00620000", T0 + NS, mark=1.0)  # (1 - 3) x 2 x 100 = -400
    assert h.engine.daily_pnl() == -400.0
    assert _actions(h.engine.check(T0 + NS))[0] == ("engage_kill_switch", "*")


def test_daily_pnl_resets_at_the_next_new_york_date() -> None:
    h = Harness(RiskConfig(max_daily_loss_usd=500))
    h.outcome("o1", T0, -450.0)
    assert h.engine.daily_pnl() == -450.0
    next_day = T0 + 24 * 60 * MIN
    h.outcome("o0", next_day, -100.0)  # yesterday's loss no longer counts
    assert h.engine.daily_pnl() == -100.0
    assert h.engine.check(next_day) == []


def test_manual_engage_release_cycle() -> None:
    h = Harness()
    assert isinstance(h.intent("a", T0), OrderRequest)
    cmds = h.engine.on_command(_command("op-1", T0 + NS, "engage_kill_switch", reason="desk says stop"))
    assert _actions(cmds) == [("engage_kill_switch", "*"), ("cancel", "SPY"), ("flatten", "SPY")]
    assert _stored(h.state) == {
        "engaged": True,
        "reason": "Manual",
        "ts": T0 + NS,
        "source": "risk_command:op-1",
    }
    r = h.intent("b", T0 + 2 * NS, contract="SPY250708P00600000")
    assert isinstance(r, RiskRejection) and r.rule == "kill_switch" and "Manual" in r.reason
    assert h.engine.on_command(_command("op-1", T0 + 3 * NS, "engage_kill_switch")) == []  # redelivery
    assert h.engine.on_command(_command("op-2", T0 + 3 * NS, "engage_kill_switch")) == []  # already engaged
    rel = h.engine.on_command(_command("op-3", T0 + 4 * NS, "release_kill_switch", reason="all clear"))
    assert _actions(rel) == [("release_kill_switch", "*")] and rel[0].reason == "all clear"
    assert _stored(h.state)["engaged"] is False
    assert isinstance(h.intent("c", T0 + 5 * NS, contract="SPY250708P00600000"), OrderRequest)


def test_other_commands_are_forwarded() -> None:
    h = Harness()
    cmd = _command("op-9", T0, "flatten", underlying="SPY")
    assert h.engine.on_command(cmd) == [cmd]


def test_operator_writes_the_key_directly() -> None:
    h = Harness()
    assert isinstance(h.intent("a", T0), OrderRequest)
    h.state.set(keys.KILL_SWITCH, b'{"engaged": true}')  # the minimal form an operator may write
    cmds = h.engine.check(T0 + NS)
    assert _actions(cmds) == [("engage_kill_switch", "*"), ("cancel", "SPY"), ("flatten", "SPY")]
    r = h.intent("b", T0 + 2 * NS, contract="SPY250708P00600000")
    assert isinstance(r, RiskRejection) and r.rule == "kill_switch" and "by operator" in r.reason
    h.state.set(keys.KILL_SWITCH, shared_state.encode(KillSwitchState(False, "", T0 + 3 * NS, "console")))
    assert _actions(h.engine.check(T0 + 3 * NS)) == [("release_kill_switch", "*")]
    assert isinstance(h.intent("c", T0 + 4 * NS, contract="SPY250708P00600000"), OrderRequest)


def test_key_is_read_once_per_timestamp() -> None:
    class CountingState(MemoryState):
        reads = 0

        def get(self, key: str) -> bytes | None:
            if key == keys.KILL_SWITCH:
                CountingState.reads += 1
            return super().get(key)

    state = CountingState()
    h = Harness(state=state)
    h.intent("a", T0)
    h.engine.check(T0)
    h.engine.check(T0)
    assert CountingState.reads == 1
    h.engine.check(T0 + 1)
    assert CountingState.reads == 2


def test_state_store_outage_refuses_entries_then_recovers() -> None:
    store = FlakyState()
    h = Harness(state=store)
    assert isinstance(h.intent("a", T0), OrderRequest)
    store.down = True
    e = h.engine
    r = e.on_intent(make_intent("b", h.at(T0 + NS), contract="SPY250708P00600000"))
    assert isinstance(r, RiskRejection) and r.rule == "state_unavailable"
    assert "ConnectionError" in r.reason
    assert e.snapshot().state_available is False
    store.down = False
    assert isinstance(h.intent("c", T0 + 2 * NS, contract="SPY250708P00600000"), OrderRequest)
    assert e.snapshot().state_available is True


def test_protective_commands_still_flow_during_an_outage() -> None:
    store = FlakyState()
    h = Harness(RiskConfig(max_daily_loss_usd=100), state=store)
    assert isinstance(h.intent("a", T0), OrderRequest)
    store.down = True
    h.outcome("o1", T0 + NS, -150.0)
    cmds = h.engine.check(T0 + NS)  # cannot write the key, still engages and flattens
    assert _actions(cmds) == [("engage_kill_switch", "*"), ("cancel", "SPY"), ("flatten", "SPY")]
    fwd = _command("op-1", T0 + 2 * NS, "cancel", underlying="SPY")
    assert h.engine.on_command(fwd) == [fwd]
    assert store.inner.get(keys.KILL_SWITCH) is None
    store.down = False
    h.engine.check(T0 + 3 * NS)  # the store answers again: the engaged state is written
    assert _stored(store.inner)["engaged"] is True and _stored(store.inner)["reason"] == "DailyLossLimit"
    r = h.intent("b", T0 + 4 * NS, contract="SPY250708P00600000")
    assert isinstance(r, RiskRejection) and r.rule == "kill_switch"


def test_manual_engage_during_an_outage() -> None:
    store = FlakyState()
    h = Harness(state=store)
    h.intent("a", T0)
    store.down = True
    cmds = h.engine.on_command(_command("op-1", T0 + NS, "engage_kill_switch"))
    assert _actions(cmds)[0] == ("engage_kill_switch", "*") and ("flatten", "SPY") in _actions(cmds)


def test_malformed_key_refuses_entries_without_flattening() -> None:
    h = Harness()
    h.state.set(keys.KILL_SWITCH, b"yes please")
    assert h.engine.check(T0) == []
    r = h.intent("a", T0 + NS)
    assert isinstance(r, RiskRejection) and r.rule == "state_unavailable" and "malformed" in r.reason


def test_outage_never_releases_an_engaged_switch() -> None:
    store = FlakyState()
    ks = KillSwitch(store)
    ks.engage("Manual", 1, "test")
    store.down = True
    ks.refresh(2)
    assert ks.engaged and not ks.available
    store.down = False
    assert ks.refresh(3).engaged and ks.available


def test_daily_loss_kill_switch_releases_at_the_next_session_but_manual_does_not() -> None:
    from .support import ny_ns

    h = Harness(RiskConfig(max_daily_loss_usd=500, max_open_positions=10))
    day1 = ny_ns(2025, 7, 8, 11, 0)
    h.fresh(day1)
    h.outcome("o1", day1 + NS, -600.0)
    assert _actions(h.engine.check(day1 + NS))[0] == ("engage_kill_switch", "*")
    # Later the same day: still engaged, entries refused.
    r = h.intent("a", ny_ns(2025, 7, 8, 15, 0))
    assert isinstance(r, RiskRejection) and r.rule == "kill_switch"
    # First event of the next session: the day's limit no longer applies.
    day2 = ny_ns(2025, 7, 9, 9, 45)
    h.fresh(day2)
    assert _actions(h.engine.check(day2)) == [("release_kill_switch", "*")]
    assert _stored(h.state)["engaged"] is False
    assert isinstance(h.intent("b", day2 + MIN), OrderRequest)

    # A manual engagement survives the night.
    h.engine.on_command(_command("m1", day2 + 2 * MIN, "engage_kill_switch"))
    h.engine.check(day2 + 2 * MIN)
    day3 = ny_ns(2025, 7, 10, 9, 45)
    h.fresh(day3)
    assert h.engine.check(day3) == []
    assert _stored(h.state)["engaged"] is True and _stored(h.state)["reason"] == "Manual"
    r = h.intent("c", day3 + MIN)
    assert isinstance(r, RiskRejection) and r.rule == "kill_switch"
