"""Building blocks shared by the dashboards: the datasource, template variables, selectors and panels.

Every DreamBot series carries `stage` (set by the process) and, from the scrape configuration,
`namespace` and `session` (the pod label app.kubernetes.io/instance relabelled to `session`, as the
alert rules in charts/dreambot/files/alerts.yaml explain); the selectors below filter on the last two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import prometheus as prometheus_model
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    ValueMap,
    ValueMappingResult,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

#: Every panel and query variable reads the Prometheus the `datasource` variable points at.
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

#: The label filter of every DreamBot stage series.
SESSION_FILTER = 'namespace=~"$namespace", session=~"$session"'

# Grafana units (the ids of its unit picker).
SECONDS = "s"
USD = "currencyUSD"
COUNT = "short"
PER_SECOND = "ops"
STATE = "none"


@dataclass(frozen=True)
class Query:
    """One PromQL expression of a panel and the legend of its series."""

    expr: str
    legend: str = ""


def selector(metric: str, extra: str = "") -> str:
    """``metric{namespace=~"$namespace", session=~"$session"[, extra]}``."""
    return f"{metric}{{{SESSION_FILTER}{', ' + extra if extra else ''}}}"


def rate(metric: str, by: str, extra: str = "") -> str:
    """Per-second rate of a counter summed by ``by`` over Grafana's rate interval."""
    return f"sum by ({by}) (rate({selector(metric, extra)}[$__rate_interval]))"


def quantile(q: float, histogram: str, by: str) -> str:
    """The ``q`` quantile of a histogram's buckets, per ``by``."""
    return (f"histogram_quantile({q}, sum by ({by}, le) "
            f"(rate({selector(histogram + '_bucket')}[$__rate_interval])))")


def datasource_variable() -> dashboard.DatasourceVariable:
    return dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")


def query_variable(name: str, label: str, query: str, regex: str = "") -> dashboard.QueryVariable:
    """A multi-value variable over ``label_values(...)`` with an All option matching everything."""
    variable = (
        dashboard.QueryVariable(name)
        .label(label)
        .query(query)
        .datasource(DATASOURCE)
        .current(VariableOption(selected=True, text="All", value="$__all"))
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
    if regex:
        variable = variable.regex(regex)
    return variable


def session_variables(series: str = "dreambot_ready") -> list[dashboard.QueryVariable]:
    """namespace and session, read from the labels of a series every stage exports."""
    return [
        query_variable("namespace", "Namespace", f"label_values({series}, namespace)"),
        query_variable("session", "Session", f'label_values({series}{{namespace=~"$namespace"}}, session)'),
    ]


def _targets(queries: Sequence[Query]) -> list[prometheus.Dataquery]:
    return [prometheus.Dataquery().expr(q.expr).legend_format(q.legend or "__auto").ref_id(chr(ord("A") + i))
            for i, q in enumerate(queries)]


def timeseries_panel(title: str, description: str, unit: str, queries: Sequence[Query],
                     width: int = 12, height: int = 8) -> timeseries.Panel:
    """A line chart of ``queries`` with its unit, a table legend (last and max) and shared tooltip."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
        .line_width(1)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
        .legend(common_builder.VizLegendOptions()
                .display_mode(common.LegendDisplayMode.TABLE)
                .placement(common.LegendPlacement.BOTTOM)
                .show_legend(True)
                .calcs(["lastNotNull", "max"]))
        .tooltip(common_builder.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI)
                 .sort(common.SortOrder.DESCENDING))
    )
    for target in _targets(queries):
        panel = panel.with_target(target)
    return panel


def stat_panel(title: str, description: str, unit: str, queries: Sequence[Query],
               states: Mapping[int, tuple[str, str]] | None = None,
               width: int = 6, height: int = 4) -> stat.Panel:
    """The last value of each series; ``states`` maps a 0/1 gauge's values to (text, colour)."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
        .graph_mode(common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.BACKGROUND if states else common.BigValueColorMode.VALUE)
        .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    if states:
        panel = panel.mappings([
            ValueMap(options={str(value): ValueMappingResult(text=text, color=color, index=i)})
            for i, (value, (text, color)) in enumerate(sorted(states.items()))
        ])
    for target in _targets(queries):
        panel = panel.with_target(target)
    return panel


def table_panel(title: str, description: str, unit: str, query: Query,
                width: int = 24, height: int = 6) -> table.Panel:
    """One instant query as a table: a row per series with its labels and value (no time column)."""
    target = (prometheus.Dataquery().expr(query.expr).ref_id("A").instant()
              .format(prometheus_model.PromQueryFormat.TABLE))
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
        .with_target(target)
        .with_transformation(DataTransformerConfig(id_val="organize", options={"excludeByName": {"Time": True}}))
    )
