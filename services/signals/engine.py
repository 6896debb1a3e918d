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

With a learner (the session's ``--learner frozen|walk-forward``) two more steps apply: a playbook
that declares ``regimes:`` is skipped unless the underlying's latest regime (RegimeChange from the
learner's change-point detector; ``unknown`` before the first) is one of them, and once every
playbook has been evaluated the learner's policy (:mod:`services.core.learner_policy`) picks among
the playbooks that would fire: per context bucket the bandit chooses one of them or abstains, and
the chosen playbook's meta-labeling probability must reach its ``gates.learner.min_probability``.
Only that intent is published; its reason ends with what the learner contributed (arm, bucket,
propensity, probability, regime) and its features carry every value of the vector (what the
learner trains on) plus ``learner_probability`` and ``learner_propensity``. Walk-forward starts
without a policy (every candidate fires, regimes still apply) and takes each retrain from a
LearnerUpdate.

The intent's ``reason`` spells out every condition with its actual values, every gate passed, the
contract choice, the bracket and the size arithmetic; ``features`` holds the values used. Ids are
``<symbol>-<playbook>-<ts>``. The engine reads no clock and does no I/O: the same events give the
same intents.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import msgspec

from services.core.calendar import NS_PER_S, MarketCalendar, default_calendar, iso_ny, ny_date
from services.core.events import ChainSnapshot, FeatureVector, LearnerUpdate, RegimeChange, SignalIntent
from services.core.learner_policy import POOLED, UNKNOWN_REGIME, LearnerMode, LearnerPolicy, PolicyIndex
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
        learner_mode: LearnerMode = "off",
        policy: LearnerPolicy | None = None,
    ) -> None:
        self.config = config
        self.learner_mode: LearnerMode = learner_mode
        self.policy: PolicyIndex | None = PolicyIndex(policy) if policy is not None else None
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

    def on_learner(self, update: LearnerUpdate) -> None:
        """Apply a retrained policy (walk-forward); an update without one changes nothing."""
        if update.policy is not None and self.learner_mode != "off":
            self.policy = PolicyIndex(update.policy)

    def regime(self, symbol: str) -> str:
        """The learner's latest regime of ``symbol`` (``unknown`` before its first change point)."""
        return self._regimes.get(symbol, UNKNOWN_REGIME)

    def set_calibration(self, calibration: Calibration) -> None:
        """Swap in a new calibration (risk multiplier, probability-of-touch threshold)."""
        self.calibration = calibration

    def on_features(self, fv: FeatureVector) -> list[SignalIntent]:
        """Intents fired by this FeatureVector, in playbook config order."""
        return [d.intent for d in self.evaluate(fv) if d.intent is not None]

    def evaluate(self, fv: FeatureVector) -> list[Decision]:
        """Every enabled playbook's decision for this FeatureVector (also kept in ``last_decisions``)."""
        playbooks = self.config.for_symbol(fv.symbol)
        decisions = [self._evaluate(pb, fv) for pb in playbooks]
        if self.learner_mode != "off":
            decisions = self._learner_step(fv, playbooks, decisions)
        for decision in decisions:
            self.last_decisions[(fv.symbol, decision.playbook)] = decision
            if decision.intent is not None:
                self._last_fired[(fv.symbol, decision.playbook)] = fv.ts
        return decisions

    def _learner_step(self, fv: FeatureVector, playbooks: Sequence[Playbook],
                      decisions: list[Decision]) -> list[Decision]:
        """The policy's choice among the decisions that fired (module docstring)."""
        fired = [d for d in decisions if d.intent is not None]
        if not fired:
            return decisions
        regime = self.regime(fv.symbol)
        by_name = {pb.name: pb for pb in playbooks}
        context = {k: v for k, v in fv.values.items() if math.isfinite(v)}
        policy = self.policy
        if policy is None:
            text = f"learner [{self.learner_mode}: no policy trained yet, every candidate fires; regime {regime!r}]"
            return [d if d.intent is None else _with_learner(d, text, context, None, None) for d in decisions]
        choice = policy.choose([d.playbook for d in fired], fv.values, fv.symbol, fv.ts)
        p = policy.policy
        head = f"learner [{self.learner_mode} policy v{p.version} ({p.trades} trades): {choice.text()}"
        out = []
        for d in decisions:
            if d.intent is None:
                out.append(d)
            elif d.playbook != choice.arm:
                out.append(Decision(d.playbook, d.symbol, d.ts, f"{head}; regime {regime!r}]"))
            else:
                threshold = by_name[d.playbook].gates.learner.min_probability
                model = policy.meta(d.playbook)
                if model is None:
                    prob = None
                    meta = f"meta: no classifier for {d.playbook} (too few trades of both outcomes), not gated"
                else:
                    prob = model.probability({**context, **d.intent.features}, d.playbook)
                    kind = "pooled" if model.playbook == POOLED else "own"
                    meta = (f"meta p={fmt(prob)} {'>=' if prob >= threshold else '<'} {fmt(threshold)} "
                            f"({kind} calibrated logistic, {model.trades} trades, win rate {fmt(model.win_rate)})")
                text = f"{head}; {meta}; regime {regime!r}]"
                if prob is not None and prob < threshold:
                    out.append(Decision(d.playbook, d.symbol, d.ts, text))
                else:
                    out.append(_with_learner(d, text, context, prob, choice.propensity))
        return out

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

        regime_text = None
        if pb.regimes and self.learner_mode != "off":
            regime = self.regime(symbol)
            if regime not in pb.regimes:
                return no(f"learner regime {regime!r} not in the playbook's regimes {list(pb.regimes)}")
            regime_text = f"learner regime {regime!r} in {list(pb.regimes)}"

        sym_cfg = self.config.symbols[symbol]
        ctx = GateContext(
            ts=ts,
            values=values,
            regime=self._regimes.get(symbol),
            index=sym_cfg.kind == "index",
            calendar=self._calendar,
            is_halted=self._is_halted if pb.gates.event_halts else None,
            learner=self._learner,
            learner_gate=self.learner_mode == "off",
        )
        gates, probability = context_gates(pb.gates, pb.name, ctx)
        if regime_text is not None:
            gates.insert(0, GateResult("regime", True, regime_text))
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
        if self.learner_mode == "off" and self._learner is None:
            reason += "; learner off"
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


def _with_learner(decision: Decision, text: str, context: Mapping[str, float], probability: float | None,
                  propensity: float | None) -> Decision:
    """``decision`` with the learner's contribution in its intent's reason and features."""
    intent = decision.intent
    assert intent is not None
    features = {**context, **intent.features}
    if probability is not None:
        features["learner_probability"] = float(probability)
    if propensity is not None:
        features["learner_propensity"] = float(propensity)
    reason = f"{intent.reason}; {text}"
    new = msgspec.structs.replace(intent, reason=reason, features=dict(sorted(features.items())))
    return Decision(decision.playbook, decision.symbol, decision.ts, reason, new)


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
