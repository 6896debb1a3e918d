"""kopf handlers for TradingSession: thin wrappers around render (what), kube (how) and status.

- create / update / resume: apply every child with server-side apply, prune children the spec no
  longer asks for, sync the kill-switch flag in Redis, hand a new flattenNonce to the OMS.
- a timer: read the children back and write conditions, phase and per-stage/per-job status.
- delete (live sessions only, so only they carry the finalizer): hold deletion until the OMS
  reports a flat book.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import kopf
from dreambot_operator.kube import CHILD_KINDS, Kube, KubeError, load_api_client
from dreambot_operator.render import (
    GROUP,
    PLURAL,
    VERSION,
    Manifest,
    RenderContext,
    SessionRef,
    SpecError,
    approval_secret_name,
    children_selector,
    render_approval_secret,
    render_children,
    session_config,
)
from dreambot_operator.session_state import SessionState, SessionStateError
from dreambot_operator.status import DEGRADED, KillSwitchView, compute_status, get_condition

# kopf timers need a finalizer on every session (to stop them before the object goes); live sessions
# also hold it in hold_until_flat until the OMS reports a flat book.
FINALIZER: Final = "dreambot.io/finalizer"
STATUS_INTERVAL_S: Final = float(os.environ.get("DREAMBOT_OPERATOR_STATUS_INTERVAL", "10"))
FLAT_POLL_S: Final = float(os.environ.get("DREAMBOT_OPERATOR_FLAT_POLL", "10"))
RETRY_DELAY_S: Final = 10.0

log = logging.getLogger("dreambot_operator")


@functools.cache
def kube() -> Kube:
    """The operator's API client (in-cluster service account, else KUBECONFIG)."""
    return Kube(load_api_client())


def render_context() -> RenderContext:
    """Default image from DREAMBOT_IMAGE (the chart sets it to the operator's own image) and the
    project's config files from DREAMBOT_OPERATOR_CONFIG_DIR (default: the image's config/)."""
    from services.core.settings import CONFIG_DIR

    folder = Path(os.environ.get("DREAMBOT_OPERATOR_CONFIG_DIR") or CONFIG_DIR)
    files = {}
    if folder.is_dir():
        files = {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.yaml"))}
    return RenderContext(default_image=os.environ.get("DREAMBOT_IMAGE") or RenderContext.default_image,
                         base_config=files)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _changed(current: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of ``new`` whose values differ from ``current`` (to keep status patches small)."""
    return {k: v for k, v in new.items() if current.get(k) != v}


# --- operator settings ---------------------------------------------------------------------------

@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="dreambot.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="dreambot.io", key="last-handled-configuration")
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = 4


# --- apply ---------------------------------------------------------------------------------------

def ensure_approval_secret(client: Kube, ref: SessionRef) -> bool:
    """Create the session's approval-key Secret (a random key) unless it exists; True when created.
    Never replaced: risk and the OMS must keep signing and checking with one key."""
    if client.get("v1", "Secret", ref.namespace, approval_secret_name(ref.name)) is not None:
        return False
    client.apply(render_approval_secret(ref, secrets.token_hex(32)))
    return True


def apply_children(client: Kube, ref: SessionRef, children: list[Manifest]) -> None:
    """Apply every child, then delete children of this session the render no longer contains."""
    for manifest in children:
        client.apply(manifest)
    wanted = {(m["apiVersion"], m["kind"], m["metadata"]["name"]) for m in children}
    for api_version, kind in CHILD_KINDS:
        for item in client.list(api_version, kind, ref.namespace, children_selector(ref.name)):
            meta = item.get("metadata") or {}
            owned = any(o.get("uid") == ref.uid for o in meta.get("ownerReferences") or [])
            if owned and (api_version, kind, meta.get("name")) not in wanted:
                log.info("pruning %s %s/%s", kind, ref.namespace, meta.get("name"))
                client.delete(api_version, kind, ref.namespace, str(meta["name"]))


def sync_kill_switch(name: str, spec: Mapping[str, Any], was_engaged: bool | None) -> None:
    """Engage the session's Redis flag while spec.killSwitch is true; release it when the spec
    turns it off (``was_engaged`` None: unknown, e.g. on resume — release if the operator set it)."""
    url = (spec.get("redis") or {}).get("url")
    if not url:
        return
    engaged = bool(spec.get("killSwitch", False))
    if not engaged and was_engaged is False:
        return
    with SessionState(url, name) as state:
        if engaged:
            state.engage_kill_switch("Manual")
        else:
            state.release_kill_switch()


def observe(client: Kube, ref: SessionRef, spec: Mapping[str, Any], meta: Mapping[str, Any],
            previous: Mapping[str, Any], *, observed_generation: int | None = None,
            apply_error: str | None = None, deleting: bool = False) -> dict[str, Any]:
    """Read the children (and the Redis flag) and compute the session's status."""
    selector = children_selector(ref.name)
    deployments = client.list("apps/v1", "Deployment", ref.namespace, selector)
    cron_jobs: dict[str, Manifest] = {}
    for cron in client.list("batch/v1", "CronJob", ref.namespace, selector):
        cron_jobs[cron["metadata"]["labels"]["app.kubernetes.io/component"]] = cron
    runs: dict[str, list[Manifest]] = {}
    for job in client.list("batch/v1", "Job", ref.namespace, selector):
        component = (job["metadata"].get("labels") or {}).get("app.kubernetes.io/component", "")
        runs.setdefault(component, []).append(job)

    spec_engaged = bool(spec.get("killSwitch", False))
    flag_engaged: bool | None = False
    flag_reason = ""
    url = (spec.get("redis") or {}).get("url")
    if url and not spec_engaged:
        try:
            with SessionState(url, ref.name, timeout_s=1.0) as state:
                flag = state.kill_switch()
            flag_engaged, flag_reason = (flag.engaged, flag.reason) if flag else (False, "")
        except SessionStateError as exc:
            log.warning("session %s/%s: %s", ref.namespace, ref.name, exc)
            flag_engaged = None

    if apply_error is None:
        try:  # a spec the stages cannot honour stays Degraded on every status refresh, not only once
            session_config(ref.name, spec, render_context())
        except SpecError as exc:
            apply_error = f"invalid spec: {exc}"
    if apply_error is None and observed_generation is None:
        degraded = get_condition(previous.get("conditions"), DEGRADED)
        if (degraded and degraded.get("reason") == "ApplyFailed"
                and previous.get("observedGeneration") != meta.get("generation")):
            apply_error = str(degraded.get("message", "apply failed"))

    return compute_status(
        session=ref.name, spec=spec, previous=previous, deployments=deployments, cron_jobs=cron_jobs,
        job_runs=runs, kill=KillSwitchView(spec_engaged, flag_engaged, flag_reason), now=_now(),
        observed_generation=observed_generation, apply_error=apply_error, deleting=deleting,
    )


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def reconcile(name: str, namespace: str | None, uid: str, spec: kopf.Spec, meta: kopf.Meta,
              status: kopf.Status, old: Any, reason: str, patch: kopf.Patch, **_: Any) -> None:
    """Bring the children in line with the spec (idempotent; every cause runs the same code)."""
    ref = SessionRef(name=name, namespace=str(namespace), uid=uid)
    spec_d, status_d = dict(spec), dict(status)
    client = kube()
    try:
        children = render_children(ref, spec_d, render_context())
        ensure_approval_secret(client, ref)
        apply_children(client, ref, children)
    except SpecError as exc:
        # The stages could not honour this spec: nothing is applied, and retrying cannot help.
        failed = observe(client, ref, spec_d, meta, status_d, apply_error=f"invalid spec: {exc}")
        patch.status.update(_changed(status_d, failed))
        raise kopf.PermanentError(f"invalid spec: {exc}") from None
    except KubeError as exc:
        failed = observe(client, ref, spec_d, meta, status_d, apply_error=str(exc))
        patch.status.update(_changed(status_d, failed))
        if exc.permanent:
            raise kopf.PermanentError(f"applying children failed: {exc}") from None
        raise kopf.TemporaryError(f"applying children failed: {exc}", delay=RETRY_DELAY_S) from None

    was_engaged: bool | None = None
    if reason == "create":
        was_engaged = False
    elif reason == "update" and isinstance(old, Mapping):
        was_engaged = bool((old.get("spec") or {}).get("killSwitch", False))
    try:
        sync_kill_switch(name, spec_d, was_engaged)
        nonce = spec_d.get("flattenNonce")
        url = (spec_d.get("redis") or {}).get("url")
        if nonce is not None and str(nonce) != status_d.get("flattenNonce") and url:
            with SessionState(url, name) as state:
                state.request_flatten(str(nonce))
            patch.status["flattenNonce"] = str(nonce)
    except SessionStateError as exc:
        if reason == "resume" and not spec_d.get("killSwitch"):
            log.warning("session %s/%s: %s", namespace, name, exc)
        else:
            raise kopf.TemporaryError(f"session state in Redis: {exc}", delay=RETRY_DELAY_S) from None

    new = observe(client, ref, spec_d, meta, status_d, observed_generation=int(meta.get("generation", 0)))
    if spec_d.get("restartNonce") is not None:
        new["restartNonce"] = str(spec_d["restartNonce"])
    patch.status.update(_changed(status_d, new))


@kopf.timer(GROUP, VERSION, PLURAL, interval=STATUS_INTERVAL_S, initial_delay=min(STATUS_INTERVAL_S, 5.0))
def refresh_status(name: str, namespace: str | None, uid: str, spec: kopf.Spec, meta: kopf.Meta,
                   status: kopf.Status, patch: kopf.Patch, **_: Any) -> None:
    """Readiness from the children's real status, every DREAMBOT_OPERATOR_STATUS_INTERVAL seconds."""
    if meta.get("deletionTimestamp"):
        return
    ref = SessionRef(name=name, namespace=str(namespace), uid=uid)
    status_d = dict(status)
    try:
        new = observe(kube(), ref, dict(spec), meta, status_d)
    except KubeError as exc:
        log.warning("session %s/%s: reading children failed: %s", namespace, name, exc)
        return
    patch.status.update(_changed(status_d, new))


def _is_live(spec: kopf.Spec, **_: Any) -> bool:
    return spec.get("mode") == "live"


@kopf.on.delete(GROUP, VERSION, PLURAL, when=_is_live)
def hold_until_flat(name: str, namespace: str | None, uid: str, spec: kopf.Spec, meta: kopf.Meta,
                    status: kopf.Status, patch: kopf.Patch, **_: Any) -> None:
    """A live session goes away only once the OMS reports no open positions and no working orders;
    meanwhile the kill switch refuses entries and the OMS is asked to flatten."""
    ref = SessionRef(name=name, namespace=str(namespace), uid=uid)
    try:
        new = observe(kube(), ref, dict(spec), meta, dict(status), deleting=True)
        patch.status.update(_changed(dict(status), new))
    except KubeError as exc:
        log.warning("session %s/%s: reading children failed: %s", namespace, name, exc)
    url = (spec.get("redis") or {}).get("url")
    if not url:
        return
    try:
        with SessionState(url, name) as state:
            state.engage_kill_switch("Manual")
            book = state.book()
            if not book.flat:
                state.request_flatten(f"delete-{uid}")
    except SessionStateError as exc:
        raise kopf.TemporaryError(f"cannot confirm the book is flat: {exc}", delay=FLAT_POLL_S) from None
    if not book.flat:
        raise kopf.TemporaryError(
            f"waiting for the OMS to report flat: {book.open_positions} open positions, "
            f"{book.working_orders} working orders", delay=FLAT_POLL_S)
