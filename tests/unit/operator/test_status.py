"""Conditions and phase computed from children, in metav1.Condition shape."""

from __future__ import annotations

from typing import Any

from dreambot_operator.render import STAGES
from dreambot_operator.status import (
    CONDITION_TYPES,
    KillSwitchView,
    compute_status,
    get_condition,
    job_status,
    set_condition,
)

T0, T1, T2 = "2026-01-05T14:30:00Z", "2026-01-05T14:31:00Z", "2026-01-05T14:32:00Z"
NO_KILL = KillSwitchView(spec_engaged=False, flag_engaged=False)


def deployment(stage: str, replicas: int = 1, *, available: int | None = None, observed: bool = True,
               generation: int = 1) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if available is not None:
        status = {"replicas": replicas, "updatedReplicas": replicas, "readyReplicas": available,
                  "availableReplicas": available}
        if observed:
            status["observedGeneration"] = generation
    return {
        "metadata": {"name": f"s-{stage}", "generation": generation},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"image": "img:1"}]}}},
        "status": status,
    }


def status_of(deps: list[dict[str, Any]], spec: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"session": "s", "spec": spec or {}, "previous": None, "deployments": deps,
                            "cron_jobs": {}, "job_runs": {}, "kill": NO_KILL, "now": T0,
                            "observed_generation": 1}
    args.update(kw)
    return compute_status(**args)


def cond(status: dict[str, Any], type_: str) -> tuple[str, str]:
    c = get_condition(status["conditions"], type_)
    assert c is not None
    return c["status"], c["reason"]


def test_set_condition_moves_transition_time_only_on_status_change() -> None:
    conds = set_condition([], "Ready", "False", "StagesUnavailable", "0/1", now=T0, observed_generation=1)
    assert conds == [{"type": "Ready", "status": "False", "reason": "StagesUnavailable", "message": "0/1",
                      "lastTransitionTime": T0, "observedGeneration": 1}]
    same = set_condition(conds, "Ready", "False", "Suspended", "suspended", now=T1, observed_generation=2)
    assert same[0]["lastTransitionTime"] == T0
    assert (same[0]["reason"], same[0]["observedGeneration"]) == ("Suspended", 2)
    flipped = set_condition(same, "Ready", "True", "SessionReady", "ok", now=T2)
    assert flipped[0]["lastTransitionTime"] == T2
    assert conds[0]["reason"] == "StagesUnavailable"  # the input is not modified


def test_set_condition_keeps_other_conditions_in_a_stable_order() -> None:
    conds = set_condition([], "KillSwitchEngaged", "False", "NotEngaged", "", now=T0)
    conds = set_condition(conds, "Ready", "False", "Pending", "", now=T0)
    conds = set_condition(conds, "Suspended", "False", "NotSuspended", "", now=T0)
    assert [c["type"] for c in conds] == ["Ready", "Suspended", "KillSwitchEngaged"]


def test_no_available_stage_means_deploying_and_not_ready() -> None:
    st = status_of([deployment(s) for s in STAGES])
    assert st["phase"] == "Deploying"
    assert cond(st, "Ready") == ("False", "StagesUnavailable")
    assert cond(st, "StagesAvailable") == ("False", "StagesUnavailable")
    assert cond(st, "Progressing") == ("True", "RollingOut")
    assert cond(st, "Degraded") == ("False", "AsExpected")
    assert st["observedGeneration"] == 1
    assert st["stages"]["oms"] == {"replicas": 1, "readyReplicas": 0, "availableReplicas": 0,
                                   "updatedReplicas": 0, "image": "img:1"}


def test_conditions_have_positive_polarity_and_camel_case_reasons() -> None:
    st = status_of([deployment(s) for s in STAGES])
    assert {c["type"] for c in st["conditions"]} == set(CONDITION_TYPES)
    for c in st["conditions"]:
        assert not c["type"].startswith("Not")
        assert c["status"] in ("True", "False", "Unknown")
        assert c["reason"][0].isupper() and " " not in c["reason"]
        assert c["lastTransitionTime"] == T0


def test_all_stages_available_means_running_and_ready() -> None:
    st = status_of([deployment(s, available=1) for s in STAGES])
    assert st["phase"] == "Running"
    assert cond(st, "Ready") == ("True", "SessionReady")
    assert cond(st, "StagesAvailable") == ("True", "AllStagesAvailable")
    assert cond(st, "Progressing") == ("False", "RolloutComplete")


def test_a_stage_lost_after_rollout_is_degraded() -> None:
    deps = [deployment(s, available=0 if s == "risk" else 1) for s in STAGES]
    st = status_of(deps)
    assert st["phase"] == "Degraded"
    assert cond(st, "Degraded") == ("True", "StagesUnavailable")
    assert "risk 0/1 available" in get_condition(st["conditions"], "StagesAvailable")["message"]  # type: ignore[index]


def test_a_stale_controller_view_is_still_deploying() -> None:
    deps = [deployment(s, available=1, observed=(s != "oms"), generation=2) for s in STAGES]
    st = status_of(deps)
    assert st["phase"] == "Deploying"
    assert "oms" in get_condition(st["conditions"], "Progressing")["message"]  # type: ignore[index]


def test_suspended_session_reports_suspended() -> None:
    st = status_of([deployment(s, replicas=0) for s in STAGES], spec={"suspend": True})
    assert st["phase"] == "Suspended"
    assert cond(st, "Suspended") == ("True", "SuspendedBySpec")
    assert cond(st, "Ready") == ("False", "Suspended")
    assert cond(st, "StagesAvailable")[0] == "True"  # zero wanted, zero needed


def test_kill_switch_from_spec_and_from_risk() -> None:
    deps = [deployment(s, available=1) for s in STAGES]
    manual = status_of(deps, kill=KillSwitchView(spec_engaged=True, flag_engaged=None))
    assert manual["phase"] == "Halted"
    assert cond(manual, "KillSwitchEngaged") == ("True", "Manual")
    assert cond(manual, "Ready") == ("False", "KillSwitchEngaged")
    loss = status_of(deps, kill=KillSwitchView(False, True, "DailyLossLimit"))
    assert cond(loss, "KillSwitchEngaged") == ("True", "DailyLossLimit")
    unknown = status_of(deps, kill=KillSwitchView(False, None))
    assert cond(unknown, "KillSwitchEngaged") == ("Unknown", "RedisUnavailable")
    assert unknown["phase"] == "Running"


def test_apply_errors_fail_and_deletion_wins() -> None:
    deps = [deployment(s) for s in STAGES]
    failed = status_of(deps, apply_error="Deployment s-oms: 422 invalid")
    assert failed["phase"] == "Failed"
    assert cond(failed, "Degraded") == ("True", "ApplyFailed")
    deleting = status_of(deps, deleting=True, apply_error="x")
    assert deleting["phase"] == "Deleting"
    assert cond(deleting, "Ready") == ("False", "Deleting")


def test_never_applied_is_pending_and_missing_stages_are_named() -> None:
    st = status_of([], observed_generation=None)
    assert st["phase"] == "Pending"
    assert "observedGeneration" not in st
    assert "ingest missing" in get_condition(st["conditions"], "StagesAvailable")["message"]  # type: ignore[index]


def test_previous_transition_times_survive_a_recompute() -> None:
    deps = [deployment(s) for s in STAGES]
    first = status_of(deps)
    again = status_of(deps, previous=first, now=T2, observed_generation=None)
    assert again["observedGeneration"] == 1
    for c in again["conditions"]:
        assert c["lastTransitionTime"] == T0
    ready = status_of([deployment(s, available=1) for s in STAGES], previous=first, now=T2)
    assert get_condition(ready["conditions"], "Ready")["lastTransitionTime"] == T2  # type: ignore[index]
    assert get_condition(ready["conditions"], "Suspended")["lastTransitionTime"] == T0  # type: ignore[index]


def test_job_status_reads_the_cron_job_and_its_newest_run() -> None:
    cron = {"spec": {"schedule": "0 2 * * *", "suspend": False},
            "status": {"lastScheduleTime": T1, "lastSuccessfulTime": T0, "active": [{"name": "x"}]}}
    runs = [{"metadata": {"name": "s-training-100", "creationTimestamp": T0}},
            {"metadata": {"name": "s-training-200", "creationTimestamp": T1}}]
    assert job_status(cron, runs) == {"schedule": "0 2 * * *", "suspended": False, "active": 1,
                                      "lastScheduleTime": T1, "lastSuccessfulTime": T0,
                                      "lastRunId": "s-training-200"}
    assert "lastRunId" not in job_status(cron, [])
