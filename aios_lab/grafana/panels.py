"""Building blocks of the dashboards: PromQL targets, panels and variables, all reading the ``datasource`` variable.

``INST`` narrows a query to the scraped targets chosen in the ``instance`` variable (a machine, or an endpoint).
"""

from __future__ import annotations

from collections.abc import Sequence

from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.builders.common import ReduceDataOptions, StackingConfig, VizLegendOptions
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.models.common import LegendDisplayMode, LegendPlacement, StackingMode
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    DataTransformerConfig,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "[$__rate_interval]"
INST = 'instance=~"$instance"'


def q(expr: str, legend: str = "", *, instant: bool = False, table_format: bool = False) -> Dataquery:
    """A PromQL target; ``instant`` for one value per series, ``table_format`` for table panels."""
    target = Dataquery().expr(expr).datasource(DS).legend_format(legend or "__auto")
    if instant:
        target = target.instant()
    if table_format:
        target = target.format(PromQueryFormat.TABLE)
    return target


def with_refs(panel, targets: Sequence[Dataquery]):
    """``panel`` with ``targets`` added as refIds A, B, C, ..."""
    for i, target in enumerate(targets):
        panel = panel.with_target(target.ref_id(chr(ord("A") + i)))
    return panel


def series(
    title: str,
    description: str,
    targets: Sequence[Dataquery],
    unit: str = "short",
    *,
    w: int = 12,
    h: int = 8,
    stack: bool = False,
    min_val: float | None = None,
    max_val: float | None = None,
) -> timeseries.Panel:
    """A time series panel (bottom list legend); ``stack`` stacks the series."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .span(w)
        .height(h)
        .fill_opacity(10)
        .legend(VizLegendOptions().display_mode(LegendDisplayMode.LIST).placement(LegendPlacement.BOTTOM))
    )
    if stack:
        panel = panel.stacking(StackingConfig().mode(StackingMode.NORMAL)).fill_opacity(40)
    if min_val is not None:
        panel = panel.min(min_val)
    if max_val is not None:
        panel = panel.max(max_val)
    return with_refs(panel, targets)


def big(
    title: str, description: str, targets: Sequence[Dataquery], unit: str = "short", *, w: int = 4, red_at=None
) -> stat.Panel:
    """A single-number panel of the last value; it turns red at ``red_at``."""
    steps = [Threshold(value=None, color="green")] + ([Threshold(value=red_at, color="red")] if red_at else [])
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .span(w)
        .height(4)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps))
    )
    return with_refs(panel, targets)


def labels_table(title: str, description: str, expr: str, keep: Sequence[str], *, w: int = 12) -> table.Panel:
    """An instant table of the label values of the series ``expr`` returns, only the columns in ``keep``."""
    organize = DataTransformerConfig(
        id_val="organize",
        options={"includeByName": dict.fromkeys(keep, True), "indexByName": {k: i for i, k in enumerate(keep)}},
    )
    panel = table.Panel().title(title).description(description).datasource(DS).span(w).height(8)
    return with_refs(panel, [q(expr, instant=True, table_format=True)]).with_transformation(organize)


def merged_table(
    title: str, description: str, labels: Sequence[str], values: Sequence[tuple[str | None, str]], *, w: int = 12
) -> table.Panel:
    """An instant table with one row per series: the ``labels`` columns, then one column per ``(header, expr)``
    (a None header: the query only contributes labels), merged on their common labels."""
    rename = {f"Value #{chr(ord('A') + i)}": header for i, (header, _) in enumerate(values) if header}
    keep = [*labels, *rename]
    organize = DataTransformerConfig(
        id_val="organize",
        options={
            "includeByName": dict.fromkeys(keep, True),
            "indexByName": {k: i for i, k in enumerate(keep)},
            "renameByName": rename,
        },
    )
    panel = table.Panel().title(title).description(description).datasource(DS).span(w).height(8)
    panel = with_refs(panel, [q(expr, instant=True, table_format=True) for _, expr in values])
    return panel.with_transformation(DataTransformerConfig(id_val="merge", options={})).with_transformation(organize)


def quantiles(metric: str, by: str, selector: str, legend: str) -> list[Dataquery]:
    """p50 and p99 of a histogram over the rate window, per ``by``."""
    return [
        q(
            f"histogram_quantile({p / 100}, sum by (le, {by}) (rate({metric}_bucket{{{selector}}}{RATE})))",
            f"{legend} p{p}",
        )
        for p in (50, 99)
    ]


def datasource_variable() -> DatasourceVariable:
    """The Prometheus data source every query reads, chosen when the dashboard is imported."""
    return DatasourceVariable("datasource").label("Prometheus").type("prometheus")


def label_variable(name: str, label: str, metric: str, title: str) -> QueryVariable:
    """A multi-value variable of the values of ``label`` on ``metric`` (a selector), "All" matching any value."""
    return (
        QueryVariable(name)
        .label(title)
        .datasource(DS)
        .query(f"label_values({metric}, {label})")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def dashboard(uid: str, title: str, description: str, tags: list[str]) -> Dashboard:
    """An empty dashboard with aios's defaults: last 3 hours, 30 s refresh, shared crosshair, the data source."""
    return (
        Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["aios", *tags])
        .editable()
        .refresh("30s")
        .time("now-3h", "now")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(datasource_variable())
    )
