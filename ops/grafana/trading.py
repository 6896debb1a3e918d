"""The trading dashboard: kill switch, the day's PnL against its loss limit, orders, refusals, feed and broker."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from ops.grafana.panels import (
    COUNT,
    PER_SECOND,
    SECONDS,
    STATE,
    USD,
    Query,
    datasource_variable,
    rate,
    selector,
    session_variables,
    stat_panel,
    timeseries_panel,
)

UID = "dreambot-trading"

ALARM, OK = "red", "green"

# Risk exports dreambot_pnl_usd too (its view of the day); the OMS's is the book's, net of fees.
OMS_PNL = selector("dreambot_pnl_usd", 'stage="oms"')


def build() -> dashboard.Dashboard:
    """Risk state at a glance, then PnL, orders and the market-data feed of the selected sessions."""
    board = (
        dashboard.Dashboard("DreamBot / Trading")
        .uid(UID)
        .description("One trading session's risk state, PnL, orders and feed, from the stages' /metrics "
                     "(services/core/metrics.py). PnL is the OMS's (net of fees); the daily PnL and its loss "
                     "limit are the risk stage's view of the session day.")
        .tags(["dreambot", "trading"])
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("browser")
        .editable()
        .with_variable(datasource_variable())
    )
    for variable in session_variables():
        board = board.with_variable(variable)

    board = (
        board.with_row(dashboard.Row("Risk state"))
        .with_panel(stat_panel(
            "Kill switch", "1 while the kill switch is engaged: risk refuses new entries, the OMS keeps "
            "protecting open positions.", STATE,
            [Query(f"max by (session) ({selector('dreambot_kill_switch_engaged')})", "{{session}}")],
            states={0: ("off", OK), 1: ("ENGAGED", ALARM)}))
        .with_panel(stat_panel(
            "Market data feed", "Risk's stale-feed guard: STALE while entries are refused because no market data "
            "arrived in regular hours for risk.stale_feed_seconds.", STATE,
            [Query(f"max by (session) ({selector('dreambot_feed_stale')})", "{{session}}")],
            states={0: ("fresh", OK), 1: ("STALE", ALARM)}))
        .with_panel(stat_panel(
            "Reconciliation", "The OMS's book agrees with the broker (0 before start-up reconciliation completes "
            "or while a mismatch or foreign position is unresolved).", STATE,
            [Query(f"min by (session) ({selector('dreambot_reconciled')})", "{{session}}")],
            states={0: ("NOT reconciled", ALARM), 1: ("reconciled", OK)}))
        .with_panel(stat_panel(
            "Daily PnL", "The session day's realised + unrealised PnL net of fees, as risk sees it.", USD,
            [Query(f"max by (session) ({selector('dreambot_daily_pnl_usd')})", "{{session}}")]))
        .with_row(dashboard.Row("PnL"))
        .with_panel(timeseries_panel(
            "Daily PnL against the loss limit", "The day's PnL and minus the configured max daily loss: the "
            "lines meeting is where risk stops new entries.", USD,
            [Query(f"max by (session) ({selector('dreambot_daily_pnl_usd')})", "{{session}} daily PnL"),
             Query(f"-max by (session) ({selector('dreambot_daily_loss_limit_usd')})", "{{session}} loss limit")]))
        .with_panel(timeseries_panel(
            "Realised and unrealised PnL", "The OMS's PnL by kind, net of fees.", USD,
            [Query(f"sum by (session, kind) ({OMS_PNL})",
                   "{{session}} {{kind}}")]))
        .with_row(dashboard.Row("Orders and refusals"))
        .with_panel(timeseries_panel(
            "Orders by status", "Order events the OMS published per second, by status.", PER_SECOND,
            [Query(rate("dreambot_orders_total", "session, status"), "{{session}} {{status}}")]))
        .with_panel(stat_panel(
            "Orders in the time range", "Order events by status over the dashboard's time range.", COUNT,
            [Query(f"sum by (status) (increase({selector('dreambot_orders_total')}[$__range]))", "{{status}}")],
            width=12, height=8))
        .with_panel(timeseries_panel(
            "Entries refused by reason", "New entries risk refused per second, by reason.", PER_SECOND,
            [Query(rate("dreambot_entries_refused_total", "session, reason"), "{{session}} {{reason}}")]))
        .with_panel(timeseries_panel(
            "Broker errors by kind", "Broker calls that failed per second, by kind (timeout, http_5xx, "
            "http_429, rejected, auth).", PER_SECOND,
            [Query(rate("dreambot_broker_errors_total", "session, kind"), "{{session}} {{kind}}")]))
        .with_row(dashboard.Row("Market data"))
        .with_panel(timeseries_panel(
            "Market-data age", "Seconds since the last market data for each underlying arrived, per stage "
            "(ingest and risk).", SECONDS,
            [Query(f"max by (session, stage, symbol) ({selector('dreambot_market_data_age_seconds')})",
                   "{{session}} {{symbol}} ({{stage}})")], width=24))
    )
    return board
