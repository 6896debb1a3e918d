"""TradingSession status: metav1.Condition helpers and the phase, computed from the children.

Pure functions over plain dicts. Conditions have positive polarity (``Ready=False``, never
``NotReady=True``), CamelCase reasons, and a ``lastTransitionTime`` that moves only when the
condition's status changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from dreambot_operator.render import STAGES, stage_name

ConditionStatus = Literal["True", "False", "Unknown"]
Condition = dict[str, Any]

READY: Final = "Ready"
PROGRESSING: Final = "Progressing"
DEGRADED: Final = "Degraded"
SUSPENDED: Final = "Suspended"
KILL_SWITCH_ENGAGED: Final = "KillSwitchEngaged"
STAGES_AVAILABLE: Final = "StagesAvailable"
CONDITION_TYPES: Final = (READY, PROGRESSING, DEGRADED, SUSPENDED, KILL_SWITCH_ENGAGED, STAGES_AVAILABLE)

KILL_REASONS: Final = ("Manual", "DailyLossLimit")


def get_condition(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Condition | None:
    for cond in conditions or ():
        if cond.get("type") == type_:
            return dict(cond)
    return None


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None,
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    now: str,
    observed_generation: int | None = None,
) -> list[Condition]:
    """A new condition list with ``type_`` set. ``lastTransitionTime`` keeps its old value unless
    ``status`` differs from the previous one (or the condition is new)."""
    previous = get_condition(conditions, type_)
    transition = now
    if previous is not None and previous.get("status") == status and previous.get("lastTransitionTime"):
        transition = str(previous["lastTransitionTime"])
    cond: Condition = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if observed_generation is not None:
        cond["observedGeneration"] = int(observed_generation)
    out = [dict(c) for c in conditions or () if c.get("type") != type_]
    out.append(cond)
    order = {t: i for i, t in enumerate(CONDITION_TYPES)}
    out.sort(key=lambda c: (order.get(str(c.get("type")), len(order)), str(c.get("type"))))
    return out


def is_true(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> bool:
    cond = get_condition(conditions, type_)
    return cond is not None and cond.get("status") == "True"


# --- children --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StageView:
    """What one stage's Deployment says about itself."""

    stage: str
    exists: bool
    desired: int = 0
    ready: int = 0
    available: int = 0
    updated: int = 0
    rolled_out: bool = False  # the controller saw the newest spec and updated every replica
    image: str = ""

    @property
    def is_available(self) -> bool:
        return self.exists and (self.desired == 0 or (self.rolled_out and self.available >= self.desired))

    def as_status(self) -> dict[str, Any]:
        return {
            "replicas": self.desired,
            "readyReplicas": self.ready,
            "availableReplicas": self.available,
            "updatedReplicas": self.updated,
            "image": self.image,
        }


def stage_view(stage: str, deployment: Mapping[str, Any] | None) -> StageView:
    """Read a stage's Deployment (``None`` when it does not exist)."""
    if deployment is None:
        return StageView(stage=stage, exists=False)
    spec = deployment.get("spec") or {}
    st = deployment.get("status") or {}
    desired = int(spec.get("replicas", 1))
    generation = int((deployment.get("metadata") or {}).get("generation", 0))
    observed = int(st.get("observedGeneration", 0))
    updated = int(st.get("updatedReplicas", 0))
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or [{}]
    return StageView(
        stage=stage,
        exists=True,
        desired=desired,
        ready=int(st.get("readyReplicas", 0)),
        available=int(st.get("availableReplicas", 0)),
        updated=updated,
        rolled_out=observed >= generation and updated >= desired,
        image=str(containers[0].get("image", "")),
    )


def stage_views(session: str, deployments: Sequence[Mapping[str, Any]]) -> list[StageView]:
    by_name = {str((d.get("metadata") or {}).get("name")): d for d in deployments}
    return [stage_view(s, by_name.get(stage_name(session, s))) for s in STAGES]


def job_status(cron_job: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-job status from a CronJob and the Jobs it created; ``lastRunId`` is the newest Job's
    name (each run sees it as DREAMBOT_RUN_ID)."""
    spec = cron_job.get("spec") or {}
    st = cron_job.get("status") or {}
    out: dict[str, Any] = {
        "schedule": spec.get("schedule", ""),
        "suspended": bool(spec.get("suspend", False)),
        "active": len(st.get("active") or []),
    }
    for key in ("lastScheduleTime", "lastSuccessfulTime"):
        if st.get(key):
            out[key] = st[key]
    if runs:
        newest = max(runs, key=lambda j: (str((j.get("metadata") or {}).get("creationTimestamp", "")),
                                          str((j.get("metadata") or {}).get("name", ""))))
        out["lastRunId"] = str(newest["metadata"]["name"])
    return out


# --- the whole status ------------------------------------------------------------------------------

@dataclass(frozen=True)
class KillSwitchView:
    """The kill switch as the operator sees it: the spec, and the session's Redis flag
    (``flag_engaged`` is None when Redis could not be read)."""

    spec_engaged: bool
    flag_engaged: bool | None
    flag_reason: str = ""

    @property
    def engaged(self) -> bool:
        return self.spec_engaged or bool(self.flag_engaged)


def _kill_condition(kill: KillSwitchView) -> tuple[ConditionStatus, str, str]:
    if kill.spec_engaged:
        return "True", "Manual", "spec.killSwitch is true: no new entries; risk and OMS protect positions"
    if kill.flag_engaged is None:
        return "Unknown", "RedisUnavailable", "could not read the session's kill-switch flag from Redis"
    if kill.flag_engaged:
        reason = kill.flag_reason if kill.flag_reason in KILL_REASONS else "Manual"
        return "True", reason, f"kill switch engaged in Redis (reason {kill.flag_reason or 'unknown'})"
    return "False", "NotEngaged", "kill switch released"


def compute_status(
    *,
    session: str,
    spec: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    deployments: Sequence[Mapping[str, Any]],
    cron_jobs: Mapping[str, Mapping[str, Any]],
    job_runs: Mapping[str, Sequence[Mapping[str, Any]]],
    kill: KillSwitchView,
    now: str,
    observed_generation: int | None = None,
    apply_error: str | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    """The full status of a session from its children. ``observed_generation`` is the generation
    the children were last applied for (None: keep the previous one)."""
    previous = previous or {}
    generation = previous.get("observedGeneration") if observed_generation is None else observed_generation
    conds: list[Condition] = [dict(c) for c in previous.get("conditions") or []]

    def put(type_: str, status: ConditionStatus, reason: str, message: str) -> None:
        nonlocal conds
        conds = set_condition(conds, type_, status, reason, message, now=now,
                              observed_generation=int(generation) if generation is not None else None)

    views = stage_views(session, deployments)
    missing = [v.stage for v in views if not v.exists]
    unavailable = [v for v in views if v.exists and not v.is_available]
    rolling = [v for v in views if v.exists and v.desired > 0 and not v.rolled_out]
    all_available = not missing and not unavailable
    suspended = bool(spec.get("suspend", False))

    if all_available:
        put(STAGES_AVAILABLE, "True", "AllStagesAvailable", "every stage has its desired replicas available")
    else:
        parts = [f"{s} missing" for s in missing]
        parts += [f"{v.stage} {v.available}/{v.desired} available" for v in unavailable]
        put(STAGES_AVAILABLE, "False", "StagesUnavailable", ", ".join(parts))

    if missing or rolling:
        names = missing + [v.stage for v in rolling]
        put(PROGRESSING, "True", "RollingOut", "rolling out: " + ", ".join(names))
    else:
        put(PROGRESSING, "False", "RolloutComplete", "every stage runs its newest spec")

    degraded_stages = [v.stage for v in unavailable if v.rolled_out]
    if apply_error:
        put(DEGRADED, "True", "ApplyFailed", apply_error)
    elif degraded_stages:
        put(DEGRADED, "True", "StagesUnavailable",
            "rolled out but unavailable: " + ", ".join(degraded_stages))
    else:
        put(DEGRADED, "False", "AsExpected", "no stage is degraded")

    if suspended:
        put(SUSPENDED, "True", "SuspendedBySpec", "spec.suspend is true: stages at zero, CronJobs suspended")
    else:
        put(SUSPENDED, "False", "NotSuspended", "stages run their configured replicas")

    put(KILL_SWITCH_ENGAGED, *_kill_condition(kill))

    ready: tuple[ConditionStatus, str, str]
    if deleting:
        ready = ("False", "Deleting", "the session is being deleted")
    elif apply_error:
        ready = ("False", "ApplyFailed", apply_error)
    elif generation is None:
        ready = ("False", "Pending", "children not applied yet")
    elif suspended:
        ready = ("False", "Suspended", "spec.suspend is true")
    elif kill.engaged:
        ready = ("False", "KillSwitchEngaged", "the kill switch refuses new entries")
    elif not all_available:
        ready = ("False", "StagesUnavailable", get_condition(conds, STAGES_AVAILABLE)["message"])  # type: ignore[index]
    else:
        ready = ("True", "SessionReady", "every stage is available and trading is enabled")
    put(READY, *ready)

    if deleting:
        phase = "Deleting"
    elif apply_error:
        phase = "Failed"
    elif generation is None:
        phase = "Pending"
    elif suspended:
        phase = "Suspended"
    elif kill.engaged:
        phase = "Halted"
    elif all_available:
        phase = "Running"
    elif degraded_stages:
        phase = "Degraded"
    else:
        phase = "Deploying"

    status: dict[str, Any] = {
        "phase": phase,
        "message": get_condition(conds, READY)["message"],  # type: ignore[index]
        "stages": {v.stage: v.as_status() for v in views if v.exists},
        "jobs": {job: job_status(cron, job_runs.get(job, ())) for job, cron in sorted(cron_jobs.items())},
        "conditions": conds,
    }
    if generation is not None:
        status["observedGeneration"] = int(generation)
    return status
