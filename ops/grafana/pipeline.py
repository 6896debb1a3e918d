"""The pipeline dashboard: end-to-end latencies, per-stage processing time, throughput, lag and failures."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard, timeseries

from ops.grafana.panels import (
    COUNT,
    PER_SECOND,
    SECONDS,
    STATE,
    Query,
    datasource_variable,
    quantile,
    rate,
    selector,
    session_variables,
    stat_panel,
    timeseries_panel,
)

UID = "dreambot-pipeline"

#: (histogram, panel title, what it measures) of the three end-to-end latencies.
LATENCIES = (
    ("dreambot_tick_to_intent_seconds", "Tick to intent",
     "Market-data event to the SignalIntent signals published."),
    ("dreambot_intent_to_order_seconds", "Intent to order",
     "Intent received by the OMS to its approved order submitted."),
    ("dreambot_tick_to_order_seconds", "Tick to order",
     "Market-data event to the order the OMS submitted."),
)


def _latency_panel(histogram: str, title: str, description: str) -> timeseries.Panel:
    return timeseries_panel(
        f"{title} p50 / p99", description + " p50 and p99 from the histogram's buckets.", SECONDS,
        [Query(quantile(0.5, histogram, "session"), "{{session}} p50"),
         Query(quantile(0.99, histogram, "session"), "{{session}} p99")], width=8)


def build() -> dashboard.Dashboard:
    """Latency first (what the alerts watch), then throughput per topic, backlog and the state store."""
    board = (
        dashboard.Dashboard("DreamBot / Pipeline")
        .uid(UID)
        .description("The stages' event pipeline (ingest, features, signals, risk, OMS, learner) from their "
                     "/metrics (services/core/metrics.py): latency, throughput, Kafka lag, dead letters, "
                     "duplicates and the Redis state store.")
        .tags(["dreambot", "pipeline"])
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .editable()
        .with_variable(datasource_variable())
    )
    for variable in session_variables():
        board = board.with_variable(variable)

    board = board.with_row(dashboard.Row("Latency"))
    for histogram, title, description in LATENCIES:
        board = board.with_panel(_latency_panel(histogram, title, description))
    board = (
        board.with_panel(timeseries_panel(
            "Processing time per stage p50 / p99", "Seconds one event took to handle in each stage.", SECONDS,
            [Query(quantile(0.5, "dreambot_processing_seconds", "session, stage"), "{{session}} {{stage}} p50"),
             Query(quantile(0.99, "dreambot_processing_seconds", "session, stage"), "{{session}} {{stage}} p99")],
            width=24))
        .with_row(dashboard.Row("Throughput"))
        .with_panel(timeseries_panel(
            "Events in per topic", "Events each stage handled per second, by input topic.", PER_SECOND,
            [Query(rate("dreambot_events_in_total", "session, stage, topic"), "{{stage}} <- {{topic}}")]))
        .with_panel(timeseries_panel(
            "Events out per topic", "Events each stage published per second, by output topic.", PER_SECOND,
            [Query(rate("dreambot_events_out_total", "session, stage, topic"), "{{stage}} -> {{topic}}")]))
        .with_row(dashboard.Row("Backlog and failures"))
        .with_panel(timeseries_panel(
            "Kafka consumer lag", "Input messages not yet committed by each stage's consumer group.", COUNT,
            [Query(f"max by (session, stage, topic) ({selector('dreambot_kafka_lag_messages')})",
                   "{{stage}} {{topic}}")], width=8))
        .with_panel(timeseries_panel(
            "Dead letters", "Messages sent to the <session>.dlq topic per second.", PER_SECOND,
            [Query(rate("dreambot_dead_letters_total", "session, stage"), "{{session}} {{stage}}")], width=8))
        .with_panel(timeseries_panel(
            "Duplicates dropped", "Redelivered events dropped per second (same wire bytes as one already "
            "handled).", PER_SECOND,
            [Query(rate("dreambot_duplicate_events_total", "session, stage"), "{{session}} {{stage}}")], width=8))
        .with_row(dashboard.Row("State store and readiness"))
        .with_panel(stat_panel(
            "State store", "Redis answers each stage (risk refuses entries while it does not).", STATE,
            [Query(f"min by (session, stage) ({selector('dreambot_state_available')})", "{{stage}}")],
            states={0: ("DOWN", "red"), 1: ("up", "green")}, width=8, height=6))
        .with_panel(timeseries_panel(
            "State store failures", "StateStore operations that failed per second, by operation.", PER_SECOND,
            [Query(rate("dreambot_state_failures_total", "session, stage, op"), "{{stage}} {{op}}")],
            width=8, height=6))
        .with_panel(stat_panel(
            "Stage readiness", "1 while the stage's /readyz answers 200.", STATE,
            [Query(f"min by (session, stage) ({selector('dreambot_ready')})", "{{stage}}")],
            states={0: ("not ready", "red"), 1: ("ready", "green")}, width=8, height=6))
    )
    return board
