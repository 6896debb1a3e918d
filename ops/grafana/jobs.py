"""The jobs dashboard: the session's CronJobs (learner training, nightly calibration) and what they changed.

The jobs export no Prometheus metrics of their own (their results go to MLflow), so this dashboard reads
kube-state-metrics' standard series about the CronJobs the operator renders (``<session>-training``,
``<session>-calibration``; operator/render.py) and the Jobs they start (``<cronjob>-<schedule minute>``),
and the stages' own gauges of the calibration in force (which nightly calibration they loaded, and when).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from ops.grafana.panels import (
    COUNT,
    SECONDS,
    STATE,
    Query,
    datasource_variable,
    query_variable,
    selector,
    stat_panel,
    table_panel,
    timeseries_panel,
)

UID = "dreambot-jobs"

# kube-state-metrics labels its series with the object's name only (cronjob, job_name), not the
# session: the operator's names carry it (operator/render.py job_name), so the filters match on them.
CRONJOBS = 'namespace=~"$namespace", cronjob=~"($session)-(training|calibration)"'
JOBS = 'namespace=~"$namespace", job_name=~"($session)-(training|calibration)-[0-9]+"'


def _session_variables() -> list[dashboard.QueryVariable]:
    """namespace and session from the CronJobs' own series (a session is the name before -training)."""
    series = 'kube_cronjob_status_last_schedule_time{cronjob=~".+-(training|calibration)"}'
    return [
        query_variable("namespace", "Namespace", f"label_values({series}, namespace)"),
        query_variable("session", "Session",
                       'label_values(kube_cronjob_status_last_schedule_time{namespace=~"$namespace", '
                       'cronjob=~".+-(training|calibration)"}, cronjob)',
                       regex="/^(.+)-(?:training|calibration)$/"),
    ]


def build() -> dashboard.Dashboard:
    """When each CronJob last ran and succeeded, then each Job run's outcome and duration."""
    board = (
        dashboard.Dashboard("DreamBot / Jobs")
        .uid(UID)
        .description("The session's CronJobs: <session>-training (learner training) and <session>-calibration "
                     "(nightly calibration). Read from kube-state-metrics' standard series "
                     "(kube_cronjob_status_last_schedule_time, kube_cronjob_status_last_successful_time, "
                     "kube_job_status_succeeded / failed, kube_job_status_start_time / completion_time): the "
                     "jobs export no Prometheus metrics of their own; their results are in MLflow. The last row "
                     "is the stages' view: the calibration in force (dreambot_calibration_info) and when they "
                     "loaded it (dreambot_calibration_loaded_timestamp_seconds).")
        .tags(["dreambot", "jobs"])
        .time("now-7d", "now")
        .refresh("5m")
        .timezone("browser")
        .editable()
        .with_variable(datasource_variable())
    )
    for variable in _session_variables():
        board = board.with_variable(variable)

    return (
        board.with_row(dashboard.Row("CronJobs"))
        .with_panel(stat_panel(
            "Since last schedule", "Time since each CronJob last started a Job.", SECONDS,
            [Query(f"time() - max by (namespace, cronjob) (kube_cronjob_status_last_schedule_time{{{CRONJOBS}}})",
                   "{{cronjob}}")]))
        .with_panel(stat_panel(
            "Since last success", "Time since a Job of each CronJob last completed successfully.", SECONDS,
            [Query("time() - max by (namespace, cronjob) "
                   f"(kube_cronjob_status_last_successful_time{{{CRONJOBS}}})", "{{cronjob}}")]))
        .with_panel(stat_panel(
            "Running", "Jobs of each CronJob running now.", COUNT,
            [Query(f"max by (namespace, cronjob) (kube_cronjob_status_active{{{CRONJOBS}}})", "{{cronjob}}")]))
        .with_panel(stat_panel(
            "Suspended", "A suspended CronJob starts no Jobs (the session's spec.suspend or the job's).", STATE,
            [Query(f"max by (namespace, cronjob) (kube_cronjob_spec_suspend{{{CRONJOBS}}})", "{{cronjob}}")],
            states={0: ("scheduled", "green"), 1: ("SUSPENDED", "orange")}))
        .with_row(dashboard.Row("Job runs"))
        .with_panel(timeseries_panel(
            "Succeeded and failed runs", "Pods of each Job run that succeeded or failed.", COUNT,
            [Query(f"sum by (namespace, job_name) (kube_job_status_succeeded{{{JOBS}}})", "{{job_name}} succeeded"),
             Query(f"sum by (namespace, job_name) (kube_job_status_failed{{{JOBS}}})", "{{job_name}} failed")]))
        .with_panel(timeseries_panel(
            "Run duration", "Completion time minus start time of each finished Job run.", SECONDS,
            [Query(f"max by (namespace, job_name) (kube_job_status_completion_time{{{JOBS}}} "
                   f"- kube_job_status_start_time{{{JOBS}}})", "{{job_name}}")]))
        .with_row(dashboard.Row("Calibration: the stages' view"))
        .with_panel(stat_panel(
            "Since the stages loaded their calibration", "Time since each stage (signals, risk) loaded the "
            "calibration in force: at start, and at a session open after the nightly job published a new one.",
            SECONDS,
            [Query(f"time() - max by (session, stage) ({selector('dreambot_calibration_loaded_timestamp_seconds')})",
                   "{{stage}}")], width=8, height=6))
        .with_panel(table_panel(
            "Calibration in force", "Which calibration each stage uses: the sessions it was fitted on and its "
            "MLflow run.", STATE,
            Query("max by (session, stage, first_session, last_session, mlflow_run_id) "
                  f"({selector('dreambot_calibration_info')})"), width=16))
    )
