"""The OMS stage: approved orders, risk commands and option quotes in; executions and outcomes out.

Before its first event (and while book and venue disagree) the stage has the OrderManager reconcile
with the venue (:meth:`~services.oms.engine.OrderManager.check_venue`); adopted orders' events are
routed like any others.

Session closes are detected from event time, so expiring contracts settle at the close in a replay
exactly as they would live. Settlement uses the underlying's last print at or before the close (13:00
on early-close days): an event stamped exactly at the close (the last regular-hours bar's vector and
its chain, both stamped at the bar's end) still counts, and the session settles on the first event
after the close, before that event's own price is recorded, or at the end of the data once event time
has reached the close.

Intrabar paths (:mod:`services.oms.intrabar`): the replay feed publishes a bar's synthetic chain (stamped
at the bar's end, priced at its close) just before the bar itself, but the path inside the bar comes
before that chain in event time. So in a session whose chains are synthetic (``synthetic_chains``,
set by the composition root for bar replays), once an underlying's chains are seen to be bar-end chains
(a chain stamped at a bar's end with the bar's close as its underlying price), the stage holds each new
chain of that underlying until its bar arrives, walks the held contracts through the bar's path, then
works the chain. Any other input first releases a held chain, unchanged. Live and captured chains are
venue quotes (their own path) and are never held, nor is anything with ``paper.intrabar: off`` or a
real venue.
"""

from __future__ import annotations

from services.core import topics
from services.core.calendar import NS_PER_S, MarketCalendar, default_calendar, ny_date
from services.core.clock import ReplayClock
from services.core.dlq import InputRefusedError
from services.core.events import (
    Bar,
    ChainSnapshot,
    Event,
    FeatureVector,
    OrderEvent,
    OrderRequest,
    Position,
    RiskCommand,
    RiskRejection,
    SignalIntent,
    TradeOutcome,
)
from services.core.stage import Output
from services.oms.approval import ExecutionGate
from services.oms.audit import event_record
from services.oms.engine import OrderManager
from services.oms.intrabar import SyntheticRepricer

#: What the stage works besides bars (a Bar only from md.bars, for its intrabar path).
_HANDLED = (ChainSnapshot, FeatureVector, SignalIntent, OrderRequest, RiskCommand, RiskRejection)


class OmsStage:
    """Feeds the OrderManager and routes what it reports."""

    name: str = "oms"
    inputs: tuple[str, ...] = (topics.SIGNALS, topics.ORDERS, topics.RISK_COMMANDS, topics.MD_CHAIN, topics.FEATURES,
                               topics.MD_BARS)

    def __init__(
        self, manager: OrderManager, clock: ReplayClock | None = None, calendar: MarketCalendar | None = None,
        gate: ExecutionGate | None = None, synthetic_chains: bool = False,
    ) -> None:
        self.manager = manager
        self.gate = gate  # risk's approval and the hard limits, checked before anything else
        self._clock = clock
        self._calendar = calendar or default_calendar()
        self._close_ns: int | None = None  # close of the session being traded
        self._last_px: dict[str, float] = {}
        # Only the composition root knows the chains are the replay's synthetic ones (a bar replay): live
        # and captured chains are venue quotes, their own path, and are never held.
        self._repricer = SyntheticRepricer(self._calendar) if manager.intrabar and synthetic_chains else None
        self._last_chain: dict[str, tuple[int, float]] = {}  # underlying -> (ts, price) of its latest chain
        self._bar_chains: set[str] = set()  # underlyings whose chains are bar-end chains
        self._held: dict[str, ChainSnapshot] = {}  # a bar-end chain waiting for its bar

    def _route(self, events: list[Event]) -> list[Output]:
        out: list[Output] = []
        for e in events:
            if isinstance(e, TradeOutcome):
                out.append(Output(topics.OUTCOMES, e.underlying, e))
            elif isinstance(e, OrderEvent | Position):
                out.append(Output(topics.EXECUTIONS, e.underlying, e))
        return out

    def _session_edge(self, ts: int, *, end_of_data: bool = False) -> list[Event]:
        """Settle at the close once event time passes it (or reaches it at the end of the data); then
        track the next session."""
        events: list[Event] = []
        if self._close_ns is not None and (ts > self._close_ns or (end_of_data and ts >= self._close_ns)):
            events.extend(self.manager.on_session_close(self._close_ns, dict(self._last_px)))
            self._close_ns = None
        day = ny_date(ts)
        if self._close_ns is None and self._calendar.first <= day <= self._calendar.last:
            session = self._calendar.session(day)
            if session is not None and ts < session.close_ns:
                self._close_ns = session.close_ns
        return events

    def handle(self, topic: str, event: Event) -> list[Output]:
        if isinstance(event, OrderRequest) and self.gate is not None:
            # Before the clock moves: a refused request's timestamp must not move the OMS's time.
            refusal = self.gate.check(event, self.manager)
            if refusal is not None:
                if self.manager.audit is not None:
                    self.manager.audit.write(event_record("order_refused", event, rule=refusal.rule,
                                                          why=refusal.reason))
                raise InputRefusedError(refusal.rule, str(refusal))
        is_bar = isinstance(event, Bar) and topic == topics.MD_BARS
        if not (is_bar or isinstance(event, _HANDLED)):
            # Before anything moves: junk must neither advance the clock nor release a held chain.
            raise ValueError(f"oms stage cannot handle {type(event).__name__} on {topic}")
        if self._clock is not None:
            self._clock.advance_to(event.ts)
        m = self.manager
        events = m.check_venue()  # start-up reconciliation (and re-checks while book and venue disagree)
        if isinstance(event, Bar):
            events.extend(self._on_bar(event))
            return self._route(events)
        events.extend(self._release())
        if isinstance(event, ChainSnapshot) and self._repricer is not None and event.underlying in self._bar_chains:
            self._held[event.underlying] = event  # worked when its bar (the path before it) arrives
            return self._route(events)
        events.extend(self._session_edge(event.ts))
        if isinstance(event, ChainSnapshot):
            events.extend(self._chain(event))
        elif isinstance(event, FeatureVector):
            close = event.values.get("close")
            if close is not None:
                self._last_px[event.symbol] = close
            events.extend(m.on_features(event))
        elif isinstance(event, SignalIntent):
            events.extend(m.on_signal_intent(event))
        elif isinstance(event, OrderRequest):
            events.extend(m.on_order_request(event))
        elif isinstance(event, RiskCommand):
            events.extend(m.on_risk_command(event))
        return self._route(events)

    def _chain(self, chain: ChainSnapshot) -> list[Event]:
        self._last_px[chain.underlying] = chain.underlying_price
        events = self.manager.on_chain(chain)
        self._last_chain[chain.underlying] = (chain.ts, chain.underlying_price)
        if self._repricer is not None:
            self._repricer.on_chain(chain)
        return events

    def _release(self, keep: str | None = None) -> list[Event]:
        """Work held chains (all but ``keep``'s) as they came, without a path."""
        events: list[Event] = []
        for underlying in [u for u in self._held if u != keep]:
            chain = self._held.pop(underlying)
            events.extend(self._session_edge(chain.ts))
            events.extend(self._chain(chain))
        return events

    def _on_bar(self, bar: Bar) -> list[Event]:
        """A bar: with its held chain, the path through it first, then the chain; else only learn whether
        this underlying's chains are bar-end chains."""
        events = self._release(keep=bar.symbol)
        end = bar.ts + bar.interval_s * NS_PER_S
        chain = self._held.pop(bar.symbol, None)
        if chain is not None:
            if self._repricer is not None and (chain.ts, chain.underlying_price) == (end, bar.close):
                events.extend(self._session_edge(bar.ts))
                events.extend(self.manager.on_intrabar(bar, self._repricer))
            events.extend(self._session_edge(chain.ts))
            events.extend(self._chain(chain))
        elif self._repricer is not None and self._last_chain.get(bar.symbol) == (end, bar.close):
            self._bar_chains.add(bar.symbol)
        return events

    def finish(self, now_ns: int) -> list[Output]:
        """End of data: work a held chain, settle a session whose close has passed; open positions stay open."""
        events = self._release()
        events.extend(self._session_edge(now_ns, end_of_data=True))
        return self._route(events)
