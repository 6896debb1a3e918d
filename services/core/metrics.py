"""Prometheus metrics every stage service exports (one registry per process, served on /metrics).

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` histograms). Every series has
a ``stage`` label, so one dashboard query covers all stages; the alert rules in the Helm chart use
these names. Latency buckets are sized for a trading pipeline: 0.5 ms .. 10 s.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


class StageMetrics:
    """The metric families of one stage process, registered on ``registry``.

    events_in / events_out: events handled / published per topic.
    duplicates: redelivered events dropped (same wire bytes as one already handled).
    dead_letters: messages sent to ``<session>.dlq``.
    processing: seconds one ``Stage.handle`` call took.
    tick_to_intent: seconds from the market-data event that started a step (replay: its injection;
        live: its event time) to a SignalIntent published by signals.
    intent_to_order: seconds from the OMS receiving an intent to submitting its approved order.
    tick_to_order: seconds from the market-data event to the OMS submitting the order.
    kafka_lag: input messages not yet committed by this stage's consumer group, per topic.
    orders: OrderEvents the OMS published, by status.
    pnl: realized / unrealized PnL in USD (OMS: net of fees; risk: the day's view).
    kill_switch: 1 while the kill switch is engaged.
    state_failures: StateStore (Redis) operations that failed, by operation.
    state_available: 1 while the StateStore answers.
    lockstep_round: the replay lockstep round this stage last completed.
    ready: 1 while /readyz answers 200.
    daily_pnl: risk's view of the session day's PnL in USD (realized + unrealized, net of fees).
    daily_loss_limit: the configured max daily loss in USD (a positive number), set by risk.
    market_data_age: seconds since market data of an underlying last arrived, per ``symbol``. Risk
        measures on its own clock (event time: the replay clock in a replay or backtest; free-running on
        a live feed, event time carried forward by wall time while nothing arrives); the ingest measures
        wall-clock seconds on a live feed and replay-clock seconds (newest event of any symbol minus
        the symbol's newest) in a replay.
    feed_stale: 1 while risk refuses entries because an underlying's feed is stale (``stale_feed``).
    broker_errors: failed venue requests and refused orders, by ``kind`` (timeout, transport,
        http_429, http_5xx, http_4xx, auth, protocol, rejected); every failed attempt counts, retried
        or not.
    reconciled: 1 once the OMS's book and the venue agree; 0 before the start-up reconciliation and
        while a mismatch (a foreign or differing position, an unreadable venue) is unresolved.
    entries_refused: intents risk refused, by ``reason`` (the guardrail's stable rule name).
    """

    def __init__(self, stage: str, registry: CollectorRegistry | None = None) -> None:
        self.stage = stage
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_in = Counter("dreambot_events_in", "Events handled, per input topic.",
                                 ["stage", "topic"], registry=r)
        self.events_out = Counter("dreambot_events_out", "Events published, per output topic.",
                                  ["stage", "topic"], registry=r)
        self.duplicates = Counter("dreambot_duplicate_events", "Redelivered events dropped.", ["stage"], registry=r)
        self.dead_letters = Counter("dreambot_dead_letters", "Messages sent to the dead-letter topic.",
                                    ["stage"], registry=r)
        self.processing = Histogram("dreambot_processing_seconds", "Time one event took to handle.",
                                    ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.tick_to_intent = Histogram("dreambot_tick_to_intent_seconds",
                                        "Market-data event to SignalIntent published.", ["stage"],
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.intent_to_order = Histogram("dreambot_intent_to_order_seconds",
                                         "Intent received by the OMS to its order submitted.", ["stage"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.tick_to_order = Histogram("dreambot_tick_to_order_seconds",
                                       "Market-data event to the order submitted by the OMS.", ["stage"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.kafka_lag = Gauge("dreambot_kafka_lag_messages", "Input messages not yet committed.",
                               ["stage", "topic"], registry=r)
        self.orders = Counter("dreambot_orders", "Order events published by the OMS, by status.",
                              ["stage", "status"], registry=r)
        self.pnl = Gauge("dreambot_pnl_usd", "PnL in USD.", ["stage", "kind"], registry=r)
        self.kill_switch = Gauge("dreambot_kill_switch_engaged", "1 while the kill switch is engaged.",
                                 ["stage"], registry=r)
        self.state_failures = Counter("dreambot_state_failures", "StateStore operations that failed.",
                                      ["stage", "op"], registry=r)
        self.state_available = Gauge("dreambot_state_available", "1 while the StateStore answers.",
                                     ["stage"], registry=r)
        self.lockstep_round = Gauge("dreambot_lockstep_round", "Replay lockstep round last completed.",
                                    ["stage"], registry=r)
        self.ready = Gauge("dreambot_ready", "1 while the stage is ready.", ["stage"], registry=r)
        # The calibration in force (services.core.calibration_watch): when it was loaded, and which it is.
        self.calibration_loaded = Gauge("dreambot_calibration_loaded_timestamp_seconds",
                                        "When the calibration in force was loaded (Unix time).", ["stage"], registry=r)
        self.calibration_info = Gauge("dreambot_calibration_info", "1 for the calibration in force.",
                                      ["stage", "first_session", "last_session", "mlflow_run_id", "sha256"],
                                      registry=r)
        self.daily_pnl = Gauge("dreambot_daily_pnl_usd", "The session day's realized + unrealized PnL, net of fees.",
                               ["stage"], registry=r)
        self.daily_loss_limit = Gauge("dreambot_daily_loss_limit_usd", "The configured max daily loss (positive).",
                                      ["stage"], registry=r)
        self.market_data_age = Gauge("dreambot_market_data_age_seconds",
                                     "Seconds since market data of the underlying last arrived.",
                                     ["stage", "symbol"], registry=r)
        self.feed_stale = Gauge("dreambot_feed_stale", "1 while entries are refused because the feed is stale.",
                                ["stage"], registry=r)
        self.broker_errors = Counter("dreambot_broker_errors", "Failed venue requests and refused orders, by kind.",
                                     ["stage", "kind"], registry=r)
        self.reconciled = Gauge("dreambot_reconciled", "1 once the OMS's book and the venue agree.",
                                ["stage"], registry=r)
        self.entries_refused = Counter("dreambot_entries_refused", "Intents risk refused, by rule.",
                                       ["stage", "reason"], registry=r)

    def count_in(self, topic: str) -> None:
        self.events_in.labels(self.stage, topic).inc()

    def count_out(self, topic: str, n: int = 1) -> None:
        self.events_out.labels(self.stage, topic).inc(n)

    def observe_processing(self, seconds: float) -> None:
        self.processing.labels(self.stage).observe(seconds)

    def observe(self, histogram: Histogram, seconds: float) -> None:
        """Record a latency on one of the stage-labelled histograms (negative values are dropped)."""
        if seconds >= 0:
            histogram.labels(self.stage).observe(seconds)

    def set_lag(self, lag: dict[str, int]) -> None:
        for topic, value in lag.items():
            self.kafka_lag.labels(self.stage, topic).set(value)

    def state_failed(self, op: str) -> None:
        self.state_failures.labels(self.stage, op).inc()
        self.state_available.labels(self.stage).set(0)

    def state_ok(self) -> None:
        self.state_available.labels(self.stage).set(1)
