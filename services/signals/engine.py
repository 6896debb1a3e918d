"""SignalEngine: feature vectors in, bracketed SignalIntents out.

For each FeatureVector the enabled playbooks of its symbol are evaluated in config order:

1. cooldown: at most one intent per playbook per symbol per ``cooldown_minutes`` (this also makes a
   redelivered FeatureVector harmless);
2. entry conditions (all must hold);
3. context gates (time window, event halt, regime, volatility band, underlying spread, learner);
4. only now the latest chain snapshot of the underlying is analysed (IV, greeks, probability of
   touch; costly, so once per snapshot and only when a playbook is about to fire), then the
   probability-of-touch gate and contract selection;
5. limit price, bracket and size; a zero size means no intent;
6. session rules (:func:`session_rules`): the entry's expiry (signal + ``entry_ttl_s``, never past the
   close) and, unless the playbook holds overnight, the flatten time (``flatten_before_close_minutes``
   before the close, early closes included); a signal at or after the flatten time fires nothing.

The intent's ``reason`` spells out every condition with its actual values, every gate passed, the
contract choice, the bracket and the size arithmetic; ``features`` holds the values used. Ids are
``<symbol>-<playbook>-<ts>``. The engine reads no clock and does no I/O: the same events give the
same intents.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from services.core.calendar import NS_PER_S, MarketCalendar, default_calendar, iso_ny, ny_date
from services.core.events import ChainSnapshot, FeatureVector, RegimeChange, SignalIntent
from services.signals.contracts import (
    ContractRecord,
    Right,
    Selection,
    candidate_expiries,
    chain_records,
    nearest_otm,
    select_contract,
)
from services.signals.gates import (
    Calibration,
    GateContext,
    GateResult,
    IsHalted,
    LearnerProbability,
    context_gates,
    pot_gate,
)
from services.signals.playbooks import Playbook, PlaybooksConfig, fmt
from services.signals.sizing import bracket_prices, limit_price, size_position

ChainRecords = Callable[[ChainSnapshot, int], Sequence[ContractRecord]]
"""Turns a chain snapshot into contract records as of a time (default: the options analytics)."""

NS_PER_MIN = 60 * NS_PER_S


def session_rules(pb: Playbook, ts: int, calendar: MarketCalendar) -> tuple[int, int | None] | str:
    """``(entry_expires_ts, flatten_ts)`` of an intent at ``ts``, or why none may fire.

    The entry expires at ``min(ts + entry_ttl_s, close)``; the flatten time is ``close -
    flatten_before_close_minutes`` (None with ``hold_overnight``). Off-session (no session that day, or
    after its close) a playbook that does not hold overnight fires nothing; one that does gets only the TTL.
    """
    expires = ts + int(pb.entry_ttl_s * NS_PER_S)
    session = calendar.session(ny_date(ts))
    if session is None or ts >= session.close_ns:
        if pb.hold_overnight:
            return expires, None
        return "session: the market is closed and the playbook does not hold overnight"
    if pb.hold_overnight:
        return min(expires, session.close_ns), None
    flatten = session.close_ns - int(pb.flatten_before_close_minutes * NS_PER_MIN)
    if ts >= flatten:
        return (f"session: flat from {iso_ny(flatten)} ({fmt(pb.flatten_before_close_minutes)} min before the "
                "close); the playbook does not hold overnight")
    return min(expires, session.close_ns), flatten


@dataclass(frozen=True, slots=True)
class Decision:
    """Outcome of one playbook on one FeatureVector: the intent, or why not."""

    playbook: str
    symbol: str
    ts: int
    reason: str
    intent: SignalIntent | None = None

    @property
    def fired(self) -> bool:
        return self.intent is not None


class SignalEngine:
    """Evaluates declarative playbooks against features and chains; see the module docstring."""

    def __init__(
        self,
        config: PlaybooksConfig,
        *,
        calibration: Calibration | None = None,
        is_halted: IsHalted | None = None,
        learner: LearnerProbability | None = None,
        calendar: MarketCalendar | None = None,
        chain_records_fn: ChainRecords | None = None,
        rate: float = 0.0,
    ) -> None:
        self.config = config
        self.calibration = calibration or Calibration(
            config.calibration.risk_multiplier, config.calibration.pot_threshold, "defaults"
        )
        self._is_halted = is_halted
        self._learner = learner
        self._calendar = calendar
        self._records_fn: ChainRecords = chain_records_fn or (
            lambda snap, now: chain_records(snap, now, rate=rate, calendar=calendar)
        )
        self._chains: dict[str, ChainSnapshot] = {}
        self._records: dict[str, tuple[ChainSnapshot, Sequence[ContractRecord]]] = {}
        self._regimes: dict[str, str] = {}
        self._last_fired: dict[tuple[str, str], int] = {}
        self.last_decisions: dict[tuple[str, str], Decision] = {}

    # --- inputs ---------------------------------------------------------------------------------

    def on_chain(self, snapshot: ChainSnapshot) -> None:
        """Keep the latest chain per underlying (analysed later, only if a playbook needs it)."""
        current = self._chains.get(snapshot.underlying)
        if current is None or snapshot.ts >= current.ts:
            self._chains[snapshot.underlying] = snapshot

    def on_regime(self, event: RegimeChange) -> None:
        """Remember the latest named regime per underlying for regime gates."""
        self._regimes[event.underlying] = event.regime

    def set_calibration(self, calibration: Calibration) -> None:
        """Swap in a new calibration (risk multiplier, probability-of-touch threshold)."""
        self.calibration = calibration

    def on_features(self, fv: FeatureVector) -> list[SignalIntent]:
        """Intents fired by this FeatureVector, in playbook config order."""
        return [d.intent for d in self.evaluate(fv) if d.intent is not None]

    def evaluate(self, fv: FeatureVector) -> list[Decision]:
        """Every enabled playbook's decision for this FeatureVector (also kept in ``last_decisions``)."""
        decisions = []
        for pb in self.config.for_symbol(fv.symbol):
            decision = self._evaluate(pb, fv)
            self.last_decisions[(fv.symbol, pb.name)] = decision
            if decision.intent is not None:
                self._last_fired[(fv.symbol, pb.name)] = fv.ts
            decisions.append(decision)
        return decisions

    # --- one playbook ---------------------------------------------------------------------------

    def _evaluate(self, pb: Playbook, fv: FeatureVector) -> Decision:
        symbol, ts, values = fv.symbol, fv.ts, fv.values

        def no(reason: str) -> Decision:
            return Decision(pb.name, symbol, ts, reason)

        last = self._last_fired.get((symbol, pb.name))
        if last is not None and ts < last + int(pb.cooldown_minutes * NS_PER_MIN):
            until = last + int(pb.cooldown_minutes * NS_PER_MIN)
            return no(f"cooldown: fired at {iso_ny(last)}, next entry from {iso_ny(until)}")

        entry_texts = []
        for i, cond in enumerate(pb.entry):
            result = cond.evaluate(values)
            if not result.passed:
                return no(f"entry[{i}] not met: {result.detail}")
            entry_texts.append(result.detail)

        sym_cfg = self.config.symbols[symbol]
        ctx = GateContext(
            ts=ts,
            values=values,
            regime=self._regimes.get(symbol),
            index=sym_cfg.kind == "index",
            calendar=self._calendar,
            is_halted=self._is_halted if pb.gates.event_halts else None,
            learner=self._learner,
        )
        gates, probability = context_gates(pb.gates, pb.name, ctx)
        if gates and not gates[-1].passed:
            return no(f"gate {gates[-1]}")
        rules = session_rules(pb, ts, self._calendar or default_calendar())
        if isinstance(rules, str):
            return no(rules)
        expires_ts, flatten_ts = rules

        chain = self._chains.get(symbol)
        if chain is None:
            return no("no option chain received yet")
        age_s = (ts - chain.ts) / NS_PER_S
        if age_s > self.config.max_chain_age_s:
            return no(f"option chain is {fmt(age_s)}s old (max {fmt(self.config.max_chain_age_s)}s)")
        records = self._analysed(chain)

        today = ny_date(ts)
        dte = sym_cfg.dte if pb.contract.dte is None else pb.contract.dte
        max_dte = max(sym_cfg.max_dte, dte)
        nearest: ContractRecord | None = None
        if pb.gates.pot is not None:
            pot_right: Right = "C" if pb.gates.pot.right == "call" else "P"
            expiries = candidate_expiries(
                records,
                right=pot_right,
                root=sym_cfg.root,
                today=today,
                dte=dte,
                max_dte=max_dte,
                calendar=self._calendar,
            )
            if expiries:
                nearest = nearest_otm(records, right=pot_right, spot=chain.underlying_price, expiry=expiries[0][0])
            pot = pot_gate(pb.gates.pot, self.calibration, nearest)
            gates.append(pot)
            if not pot.passed:
                return no(f"gate {pot}")

        selection = select_contract(
            records,
            right=pb.right,
            root=sym_cfg.root,
            today=today,
            dte=dte,
            max_dte=max_dte,
            rules=sym_cfg.contract_for(pb),
            calendar=self._calendar,
        )
        contract = selection.contract
        if contract is None:
            return no(f"contract: {selection.reason}")

        tick = sym_cfg.tick
        entry, limit_text = limit_price(contract, pb.limit, tick)
        bracket = bracket_prices(entry, pb.bracket, tick, delta=contract.delta, atr=values.get(pb.bracket.atr_feature))
        if isinstance(bracket, str):
            return no(f"bracket: {bracket}")
        size = size_position(entry, bracket.stop_loss, sym_cfg.sizing_for(pb), self.calibration.risk_multiplier)
        if size.quantity < 1:
            return no(f"size: {size.reason}")

        reason = _reason(pb, symbol, entry_texts, gates, selection, limit_text, bracket.reason, size.reason)
        reason += f"; calibration {self.calibration.source}"
        features = _used_features(pb, values, contract, chain, nearest, probability)
        intent = SignalIntent(
            ts=ts,
            id=f"{symbol}-{pb.name}-{ts}",
            underlying=symbol,
            playbook=pb.name,
            contract=contract.symbol,
            right=pb.right,
            side="buy",
            quantity=size.quantity,
            limit_price=entry,
            take_profit=bracket.take_profit,
            stop_loss=bracket.stop_loss,
            reason=reason,
            features=features,
            entry_expires_ts=expires_ts,
            flatten_ts=flatten_ts,
        )
        return Decision(pb.name, symbol, ts, reason, intent)

    def _analysed(self, chain: ChainSnapshot) -> Sequence[ContractRecord]:
        cached = self._records.get(chain.underlying)
        if cached is not None and cached[0] is chain:
            return cached[1]
        # Greeks as of the snapshot's own time: the result depends only on the snapshot.
        records = self._records_fn(chain, chain.ts)
        self._records[chain.underlying] = (chain, records)
        return records


def _reason(
    pb: Playbook,
    symbol: str,
    entry: list[str],
    gates: list[GateResult],
    selection: Selection,
    limit_text: str,
    bracket_text: str,
    size_text: str,
) -> str:
    gate_text = "; ".join(str(g) for g in gates) or "none configured"
    return (
        f"{pb.name} buy {pb.direction} on {symbol}: "
        f"entry [{'; '.join(entry)}]; "
        f"gates [{gate_text}]; "
        f"contract [{selection.reason}]; "
        f"{limit_text}; bracket [{bracket_text}]; "
        f"size [{size_text}]"
    )


def _used_features(
    pb: Playbook,
    values: Mapping[str, float],
    contract: ContractRecord,
    chain: ChainSnapshot,
    nearest: ContractRecord | None,
    probability: float | None,
) -> dict[str, float]:
    names: set[str] = set()
    for cond in pb.entry:
        names.update(cond.features())
    g = pb.gates
    if g.time_window is not None:
        names.update(("minutes_since_open", "minutes_to_close"))
    if g.regime is not None and g.regime.feature is not None:
        names.add(g.regime.feature)
    if g.vol_band is not None:
        names.add(g.vol_band.feature)
    if g.max_spread_bps is not None:
        names.add("spread_bps")
    if pb.bracket.mode == "atr":
        names.add(pb.bracket.atr_feature)
    out = {n: values[n] for n in names if n in values}
    out["underlying_price"] = chain.underlying_price
    out["contract_bid"] = contract.bid
    out["contract_ask"] = contract.ask
    out["contract_strike"] = contract.strike
    out["contract_delta"] = contract.delta
    out["contract_iv"] = contract.iv
    out["contract_prob_touch"] = contract.prob_touch
    if nearest is not None:
        out["pot_nearest_otm"] = nearest.prob_touch
    if probability is not None:
        out["learner_probability"] = probability
    return {k: float(out[k]) for k in sorted(out) if math.isfinite(out[k])}
