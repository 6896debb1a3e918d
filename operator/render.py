"""TradingSession spec -> child manifests. Pure functions: no clock, no API calls, no I/O.

Every child has a deterministic name (``<session>-<stage>``, ``<session>-config``, ...), the
``app.kubernetes.io/*`` labels and a controller owner reference to its TradingSession, so the
operator can apply them idempotently (server-side apply) and garbage collection removes them with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import yaml
from pydantic import ValidationError

from services.core.session_config import SESSION_FILE_NAME, SessionConfig

Manifest = dict[str, Any]

GROUP: Final = "dreambot.io"
VERSION: Final = "v1alpha1"
PLURAL: Final = "tradingsessions"
KIND: Final = "TradingSession"
API_VERSION: Final = f"{GROUP}/{VERSION}"

STAGES: Final = ("ingest", "features", "signals", "risk", "oms", "learner")
ENTRY_STAGES: Final = ("signals",)  # scaled to zero by the kill switch; risk and oms keep running
JOB_MODULES: Final = {"training": "mlops.train", "calibration": "ops.nightly_calibration"}
#: Where a job writes its files (the pod's /tmp emptyDir); MLflow keeps them as the run's artifacts.
JOB_OUTPUT_DIR: Final = "/tmp/dreambot"
STORAGE_DIR: Final = "/tmp/dreambot/storage"
#: The session's data volume (a PersistentVolumeClaim, rendered with the calibration job): the nightly
#: job syncs the history into it and publishes the calibration there; signals and risk mount it read-only
#: and re-read the calibration at each session open (services.core.calibration_watch).
DATA_DIR: Final = "/var/lib/dreambot"
CALIBRATION_PATH: Final = f"{DATA_DIR}/calibration.json"
FLATFILE_DIR: Final = f"{DATA_DIR}/flatfiles"
CALIBRATION_READERS: Final = ("signals", "risk")
#: Trading days the nightly calibration syncs and calibrates on (the seed's command).
CALIBRATION_DAYS: Final = 60
DATA_VOLUME_SIZE: Final = "2Gi"
#: Polygon flat-file (S3) credentials the nightly job may read from marketData.polygon.secretRef.
POLYGON_S3_KEYS: Final = ("POLYGON_S3_ACCESS_KEY", "POLYGON_S3_SECRET_KEY", "POLYGON_S3_ENDPOINT", "POLYGON_S3_BUCKET")

HTTP_PORT: Final = 9100
CONFIG_DIR: Final = "/etc/dreambot"
LIVE_CONFIRMATION: Final = "I-UNDERSTAND-THIS-TRADES-REAL-MONEY"
MANAGED_BY: Final = "dreambot-operator"
PART_OF: Final = "dreambot"
APP_NAME: Final = "dreambot"
DEFAULT_IMAGE: Final = "dreambot:latest"

RESTART_NONCE_ANNOTATION: Final = "dreambot.io/restart-nonce"
CONFIG_HASH_ANNOTATION: Final = "dreambot.io/config-hash"

DEFAULT_RESOURCES: Final[Mapping[str, Mapping[str, str]]] = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"memory": "1Gi"},
}
JOB_RESOURCES: Final[Mapping[str, Mapping[str, str]]] = {
    "requests": {"cpu": "500m", "memory": "1Gi"},
    "limits": {"memory": "4Gi"},
}


@dataclass(frozen=True)
class SessionRef:
    """The TradingSession the children belong to (for names, labels and the owner reference)."""

    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class RenderContext:
    """What the render needs beyond the spec.

    ``default_image`` is used when neither the stage nor the spec names one (the operator passes its
    own image). ``base_config`` holds the project's config files (``broker.yaml``, ``playbooks.yaml``,
    ...) by file name; they go into the session ConfigMap next to ``session.yaml``.
    """

    default_image: str = DEFAULT_IMAGE
    base_config: Mapping[str, str] = field(default_factory=dict)


# --- names and labels ----------------------------------------------------------------------------

def stage_name(session: str, stage: str) -> str:
    """Deployment/Service name of ``stage``."""
    return f"{session}-{stage}"


def job_name(session: str, job: str) -> str:
    """CronJob name of ``job`` (training, calibration)."""
    return f"{session}-{job}"


def config_map_name(session: str) -> str:
    return f"{session}-config"


def data_claim_name(session: str) -> str:
    """PersistentVolumeClaim of the session's data volume (history and the published calibration)."""
    return f"{session}-data"


def has_calibration_job(spec: Mapping[str, Any]) -> bool:
    return "calibration" in (spec.get("jobs") or {})


def service_account_name(session: str) -> str:
    """ServiceAccount, Role and RoleBinding name of the session's pods."""
    return f"{session}-session"


def selector_labels(session: str, component: str) -> dict[str, str]:
    """Labels that select one component's pods (immutable once a Deployment exists)."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": session,
        "app.kubernetes.io/component": component,
    }


def labels(session: str, component: str) -> dict[str, str]:
    """Full label set of a child."""
    return {
        **selector_labels(session, component),
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def children_selector(session: str) -> str:
    """Label selector matching every child of ``session``."""
    return (f"app.kubernetes.io/instance={session},"
            f"app.kubernetes.io/managed-by={MANAGED_BY},app.kubernetes.io/part-of={PART_OF}")


def owner_reference(ref: SessionRef) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": ref.name,
        "uid": ref.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(ref: SessionRef, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": ref.namespace,
        "labels": labels(ref.name, component),
        "ownerReferences": [owner_reference(ref)],
    }


# --- spec reading --------------------------------------------------------------------------------

def is_live(spec: Mapping[str, Any]) -> bool:
    return bool(spec.get("mode", "paper") == "live")


def live_confirmed(spec: Mapping[str, Any]) -> bool:
    """True only for mode=live with the exact confirmation phrase."""
    return is_live(spec) and spec.get("liveConfirmation") == LIVE_CONFIRMATION


def stage_replicas(spec: Mapping[str, Any], stage: str) -> int:
    """Replicas a stage should run: its spec value (default 1), zero when suspended, zero for
    entry stages while the kill switch is on, and never more than one OMS."""
    if spec.get("suspend", False):
        return 0
    if spec.get("killSwitch", False) and stage in ENTRY_STAGES:
        return 0
    replicas = int(_stage_spec(spec, stage).get("replicas", 1))
    return min(replicas, 1) if stage == "oms" else replicas


def stage_image(spec: Mapping[str, Any], stage: str, ctx: RenderContext) -> str:
    return str(_stage_spec(spec, stage).get("image") or spec.get("image") or ctx.default_image)


def _stage_spec(spec: Mapping[str, Any], stage: str) -> Mapping[str, Any]:
    return (spec.get("stages") or {}).get(stage) or {}


def _nonce(value: Any) -> str:
    return "" if value is None else str(value)


class SpecError(ValueError):
    """A TradingSession spec the stages could not honour (one line; the operator refuses it)."""


#: spec.risk (camelCase, the CRD's names) -> SessionConfig.risk fields.
RISK_FIELDS: Final[Mapping[str, str]] = {
    "maxDailyLoss": "max_daily_loss_usd",
    "maxOpenPositions": "max_open_positions",
    "maxContractsPerOrder": "max_contracts_per_order",
    "maxPremiumPerSymbol": "max_premium_per_symbol_usd",
    "maxPremiumTotal": "max_premium_total_usd",
    "maxOrdersPerMinute": "max_orders_per_minute",
}


def session_config(name: str, spec: Mapping[str, Any], ctx: RenderContext | None = None) -> SessionConfig:
    """The SessionConfig the stages will load from ``session.yaml`` (validated through the stages'
    own model and, when ``ctx`` has them, against the project's playbooks.yaml and risk.yaml)."""
    kafka = spec.get("kafka") or {}
    market = spec.get("marketData") or {}
    md: dict[str, Any] = {"source": "synthetic"}
    if "replay" in market:
        md = {"source": "replay", "replay": {"path": market["replay"]["source"]}}
    elif "polygon" in market:
        polygon = market["polygon"]
        md = {"source": "polygon", "polygon": {
            k: v for k, v in (("rest_url", polygon.get("baseUrl")), ("ws_url", polygon.get("websocketUrl"))) if v}}
    broker_spec = spec.get("broker") or {}
    broker: dict[str, Any] = {"provider": "paper"}
    if broker_spec:
        broker = {"provider": broker_spec.get("provider", "tradier"),
                  "environment": broker_spec.get("environment", "sandbox")}
        if broker_spec.get("baseUrl"):
            broker["base_url"] = broker_spec["baseUrl"]
    risk_spec = dict(spec.get("risk") or {})
    unknown = sorted(set(risk_spec) - set(RISK_FIELDS))
    if unknown:
        raise SpecError(f"spec.risk: {', '.join(unknown)} not supported by the risk stage "
                        f"(supported: {', '.join(RISK_FIELDS)})")
    playbooks = spec.get("playbooks") or {}
    values: dict[str, Any] = {
        "name": name,
        "mode": spec.get("mode", "paper"),
        "live_confirm": live_confirmed(spec),
        "symbols": list(spec.get("symbols") or []),
        "config_dir": CONFIG_DIR,
        "kafka": {"bootstrap": kafka.get("bootstrap", ""), "topic_prefix": kafka.get("topicPrefix") or name,
                  "partitions": int(kafka.get("partitions", 3))},
        "redis": {"url": (spec.get("redis") or {}).get("url", "")},
        "http": {"port": HTTP_PORT},
        "broker": broker,
        "market_data": md,
        "risk": {RISK_FIELDS[k]: v for k, v in risk_spec.items()},
        "playbooks": {k: v for k, v in (("enabled", playbooks.get("enabled")),
                                        ("overrides", playbooks.get("overrides"))) if v is not None},
    }
    try:
        config = SessionConfig(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "spec"
        raise SpecError(f"session {where}: {str(err.get('msg', 'invalid')).removeprefix('Value error, ')}") from None
    if ctx is not None:
        _check_against_config(config, ctx)
    return config


def _check_against_config(config: SessionConfig, ctx: RenderContext) -> None:
    """The playbook selection and risk limits applied to the project's files, as the stages will."""
    from services.app.stages import apply_playbook_selection, apply_risk_overrides
    from services.core.settings import ConfigError

    try:
        if "playbooks.yaml" in ctx.base_config:
            apply_playbook_selection(yaml.safe_load(ctx.base_config["playbooks.yaml"]), config.playbooks,
                                     "playbooks.yaml")
        if "risk.yaml" in ctx.base_config:
            apply_risk_overrides(yaml.safe_load(ctx.base_config["risk.yaml"]), config.risk, "risk.yaml")
    except ConfigError as exc:
        raise SpecError(str(exc)) from None


def session_file(config: SessionConfig) -> str:
    """``session.yaml``: what the spec set, in SessionConfig's own fields (no credentials)."""
    data = config.model_dump(mode="json", exclude_unset=True, exclude={"broker": {"access_token"}})
    return str(yaml.safe_dump(data, sort_keys=True))


def config_data(name: str, spec: Mapping[str, Any], ctx: RenderContext) -> dict[str, str]:
    """ConfigMap data: the project's config files plus the rendered ``session.yaml``."""
    data = {k: v for k, v in sorted(ctx.base_config.items()) if k != "session.yaml"}
    data["session.yaml"] = session_file(session_config(name, spec, ctx))
    return data


def config_hash(data: Mapping[str, str]) -> str:
    """Short digest of the ConfigMap data; a change rolls the stages."""
    blob = json.dumps(dict(data), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# --- containers ----------------------------------------------------------------------------------

def _secret_env(env: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def session_env(name: str, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Environment every stage and job gets (plain values only; secrets are added per stage): where
    the session file is, and the same validated SessionConfig's values under their DREAMBOT_* names
    (the environment outranks the file; both come from one object, so they agree)."""
    c = session_config(name, spec)
    return [
        {"name": "DREAMBOT_SESSION_FILE", "value": f"{CONFIG_DIR}/{SESSION_FILE_NAME}"},
        {"name": "DREAMBOT_SESSION", "value": c.name},
        {"name": "DREAMBOT_MODE", "value": c.mode},
        {"name": "DREAMBOT_LIVE_CONFIRM", "value": "true" if c.live_confirm else "false"},
        {"name": "DREAMBOT_SYMBOLS", "value": ",".join(c.symbols)},
        {"name": "DREAMBOT_KAFKA_BOOTSTRAP", "value": c.kafka.bootstrap},
        {"name": "DREAMBOT_KAFKA_TOPIC_PREFIX", "value": c.topic_prefix},
        {"name": "DREAMBOT_KAFKA_PARTITIONS", "value": str(c.kafka.partitions)},
        {"name": "DREAMBOT_REDIS_URL", "value": c.redis.url},
        {"name": "DREAMBOT_CONFIG_DIR", "value": CONFIG_DIR},
        {"name": "DREAMBOT_HTTP_PORT", "value": str(HTTP_PORT)},
        # Stages bind loopback unless told: in a pod, probes and Prometheus come over the pod network.
        {"name": "DREAMBOT_HTTP_HOST", "value": "0.0.0.0"},
        # The root filesystem is read-only: log files and the journal go to the pod's /tmp emptyDir
        # (stderr stays the pod's log).
        {"name": "DREAMBOT_STORAGE_DIR", "value": STORAGE_DIR},
    ]


def broker_env(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Tradier credentials from broker.secretRef, as secretKeyRefs (never literal values), and the
    endpoint override TRADIER_BASE_URL when the spec sets one."""
    broker = spec.get("broker") or {}
    env: list[dict[str, Any]] = []
    ref = broker.get("secretRef")
    if ref:
        env += [
            _secret_env("TRADIER_ACCESS_TOKEN", ref["name"], ref.get("accessTokenKey", "TRADIER_ACCESS_TOKEN")),
            _secret_env("TRADIER_ACCOUNT_ID", ref["name"], ref.get("accountIdKey", "TRADIER_ACCOUNT_ID")),
        ]
    if broker.get("baseUrl"):
        env.append({"name": "TRADIER_BASE_URL", "value": broker["baseUrl"]})
    return env


def polygon_env(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Polygon API key from marketData.polygon.secretRef, as a secretKeyRef, and the endpoint
    overrides POLYGON_BASE_URL / POLYGON_WS_URL when the spec sets them."""
    polygon = (spec.get("marketData") or {}).get("polygon") or {}
    env: list[dict[str, Any]] = []
    ref = polygon.get("secretRef")
    if ref:
        env.append(_secret_env("POLYGON_API_KEY", ref["name"], ref.get("apiKeyKey", "POLYGON_API_KEY")))
    if polygon.get("baseUrl"):
        env.append({"name": "POLYGON_BASE_URL", "value": polygon["baseUrl"]})
    if polygon.get("websocketUrl"):
        env.append({"name": "POLYGON_WS_URL", "value": polygon["websocketUrl"]})
    return env


#: The env variable (and Secret key) of risk's approval key; the Secret is ``<session>-approval``.
APPROVAL_KEY_ENV: Final = "DREAMBOT_APPROVAL_KEY"
#: Stages that sign (risk) or check (the OMS) approvals.
APPROVAL_STAGES: Final = ("risk", "oms")


def approval_secret_name(session: str) -> str:
    """The Secret holding the session's approval key (made once by the operator, owned by the session)."""
    return f"{session}-approval"


def render_approval_secret(ref: SessionRef, key: str) -> Manifest:
    """The approval-key Secret with ``key`` (applied only while it does not exist: the key never rotates
    under running stages)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(ref, approval_secret_name(ref.name), "approval"),
        "type": "Opaque",
        "stringData": {APPROVAL_KEY_ENV: key},
    }


def stage_env(name: str, spec: Mapping[str, Any], stage: str) -> list[dict[str, Any]]:
    """Session env plus only the secrets the stage needs: the OMS talks to the broker, ingest to
    Polygon, risk and the OMS share the approval key."""
    env = session_env(name, spec)
    if stage == "oms":
        env += broker_env(spec)
    if stage == "ingest":
        env += polygon_env(spec)
    if stage in APPROVAL_STAGES:
        env.append(_secret_env(APPROVAL_KEY_ENV, approval_secret_name(name), APPROVAL_KEY_ENV))
    if stage in CALIBRATION_READERS and has_calibration_job(spec):
        env.append({"name": "DREAMBOT_CALIBRATION", "value": CALIBRATION_PATH})
    return env


def polygon_s3_env(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The flat-file (S3) credentials from marketData.polygon.secretRef, each optional (a Secret
    without them leaves the job on REST)."""
    ref = ((spec.get("marketData") or {}).get("polygon") or {}).get("secretRef")
    if not ref:
        return []
    return [{"name": key, "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": key, "optional": True}}}
            for key in POLYGON_S3_KEYS]


def _resources(custom: Mapping[str, Any] | None, default: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    if not custom:
        return {k: dict(v) for k, v in default.items()}
    return {k: {rk: str(rv) for rk, rv in v.items()} for k, v in custom.items() if v}


def _security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _volumes(name: str, data: bool = False) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": config_map_name(name)}},
        {"name": "tmp", "emptyDir": {}},
    ]
    if data:
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": data_claim_name(name)}})
    return volumes


def _volume_mounts(data: str | None = None) -> list[dict[str, Any]]:
    """Config and /tmp; ``data`` "ro"/"rw": also the session's data volume at DATA_DIR."""
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if data is not None:
        mounts.append({"name": "data", "mountPath": DATA_DIR, "readOnly": data == "ro"})
    return mounts


def render_data_claim(ref: SessionRef) -> Manifest:
    """The session's data volume. ReadWriteOnce on the cluster's default storage class: the calibration
    job and the signals and risk pods must then share a node (one-node clusters; elsewhere bind the
    claim to a ReadWriteMany class). Owned by the session, so it goes when the session is deleted."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(ref, data_claim_name(ref.name), "data"),
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": DATA_VOLUME_SIZE}}},
    }


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


# --- children ------------------------------------------------------------------------------------

def render_config_map(ref: SessionRef, spec: Mapping[str, Any], ctx: RenderContext) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(ref, config_map_name(ref.name), "config"),
        "data": config_data(ref.name, spec, ctx),
    }


def render_deployment(ref: SessionRef, spec: Mapping[str, Any], stage: str, ctx: RenderContext) -> Manifest:
    """One stage's Deployment. The OMS is capped at one replica and replaced with Recreate so two
    OMS pods never work orders at the broker at once."""
    strategy: dict[str, Any] = (
        {"type": "Recreate"} if stage == "oms"
        else {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    )
    stage_spec = _stage_spec(spec, stage)
    reads_calibration = stage in CALIBRATION_READERS and has_calibration_job(spec)
    container: dict[str, Any] = {
        "name": stage,
        "image": stage_image(spec, stage, ctx),
        "command": ["python", "-m", f"services.{stage}.main"],
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "env": stage_env(ref.name, spec, stage),
        "resources": _resources(stage_spec.get("resources"), DEFAULT_RESOURCES),
        "startupProbe": _probe("/healthz", 2, 60),
        "livenessProbe": _probe("/healthz", 10, 3),
        "readinessProbe": _probe("/readyz", 5, 3),
        "volumeMounts": _volume_mounts("ro" if reads_calibration else None),
        "securityContext": _security_context(),
    }
    if spec.get("imagePullPolicy"):
        container["imagePullPolicy"] = spec["imagePullPolicy"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(ref, stage_name(ref.name, stage), stage),
        "spec": {
            "replicas": stage_replicas(spec, stage),
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector_labels(ref.name, stage)},
            "strategy": strategy,
            "template": {
                "metadata": {
                    "labels": labels(ref.name, stage),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(HTTP_PORT),
                        "prometheus.io/path": "/metrics",
                        RESTART_NONCE_ANNOTATION: _nonce(spec.get("restartNonce")),
                        CONFIG_HASH_ANNOTATION: config_hash(config_data(ref.name, spec, ctx)),
                    },
                },
                "spec": {
                    "serviceAccountName": service_account_name(ref.name),
                    "terminationGracePeriodSeconds": 60 if stage == "oms" else 30,
                    "securityContext": _pod_security_context(),
                    "containers": [container],
                    "volumes": _volumes(ref.name, data=reads_calibration),
                },
            },
        },
    }


def render_service(ref: SessionRef, stage: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(ref, stage_name(ref.name, stage), stage),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(ref.name, stage),
            "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def job_args(spec: Mapping[str, Any], job: str) -> list[str]:
    """The job's arguments. Training: the session's symbols (its data comes from the mounted
    session.yaml) and where the outputs go. Calibration: the seed's nightly command, syncing into and
    publishing onto the session's data volume, where signals and risk read it."""
    symbols = [str(s).upper() for s in spec.get("symbols") or ()]
    if job == "training":
        return ["--symbols", *symbols, "--output", f"{JOB_OUTPUT_DIR}/learner_state.json",
                "--policy-output", f"{JOB_OUTPUT_DIR}/policy.json"]
    return ["--symbols", *symbols, "--days", str(CALIBRATION_DAYS), "--sync-method", "rest",
            "--flatfile-dest", FLATFILE_DIR, "--calibration-output", CALIBRATION_PATH]


def render_cron_job(ref: SessionRef, spec: Mapping[str, Any], job: str, ctx: RenderContext) -> Manifest:
    """The learner training or nightly calibration CronJob. Each run's Job name reaches the
    container as DREAMBOT_RUN_ID, so the MLflow run can be traced back to it."""
    job_spec: Mapping[str, Any] = (spec.get("jobs") or {})[job]
    mlflow = job_spec.get("mlflow") or {}
    env = session_env(ref.name, spec)
    if job == "calibration":
        env += polygon_env(spec) + polygon_s3_env(spec)
    env += [
        {"name": "MLFLOW_TRACKING_URI", "value": mlflow.get("trackingUri", "")},
        {"name": "DREAMBOT_MLFLOW_EXPERIMENT", "value": mlflow.get("experiment") or f"{ref.name}-{job}"},
        {"name": "DREAMBOT_RUN_ID", "valueFrom": {"fieldRef": {
            "fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}},
    ]
    container: dict[str, Any] = {
        "name": job,
        "image": str(job_spec.get("image") or spec.get("image") or ctx.default_image),
        "command": ["python", "-m", JOB_MODULES[job]],
        "args": job_args(spec, job),
        "env": env,
        "resources": _resources(job_spec.get("resources"), JOB_RESOURCES),
        "volumeMounts": _volume_mounts("rw" if job == "calibration" else None),
        "securityContext": _security_context(),
    }
    if spec.get("imagePullPolicy"):
        container["imagePullPolicy"] = spec["imagePullPolicy"]
    cron: dict[str, Any] = {
        "schedule": job_spec["schedule"],
        "concurrencyPolicy": job_spec.get("concurrencyPolicy", "Forbid"),
        "suspend": bool(spec.get("suspend", False) or job_spec.get("suspend", False)),
        "startingDeadlineSeconds": 600,
        "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 3,
        "jobTemplate": {
            "metadata": {"labels": labels(ref.name, job)},
            "spec": {
                "backoffLimit": 1,
                "template": {
                    "metadata": {"labels": labels(ref.name, job)},
                    "spec": {
                        "restartPolicy": "Never",
                        "serviceAccountName": service_account_name(ref.name),
                        "securityContext": _pod_security_context(),
                        "containers": [container],
                        "volumes": _volumes(ref.name, data=job == "calibration"),
                    },
                },
            },
        },
    }
    if job_spec.get("timeZone"):
        cron["timeZone"] = job_spec["timeZone"]
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _metadata(ref, job_name(ref.name, job), job),
        "spec": cron,
    }


def render_rbac(ref: SessionRef) -> list[Manifest]:
    """ServiceAccount for the session's pods and a Role that lets them read only their own
    TradingSession and ConfigMap."""
    sa = service_account_name(ref.name)
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _metadata(ref, sa, "session"),
            "automountServiceAccountToken": True,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _metadata(ref, sa, "session"),
            "rules": [
                {"apiGroups": [""], "resources": ["configmaps"],
                 "resourceNames": [config_map_name(ref.name)], "verbs": ["get", "watch"]},
                {"apiGroups": [GROUP], "resources": [PLURAL],
                 "resourceNames": [ref.name], "verbs": ["get", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _metadata(ref, sa, "session"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ref.namespace}],
        },
    ]


def render_children(
    ref: SessionRef, spec: Mapping[str, Any], ctx: RenderContext | None = None
) -> list[Manifest]:
    """Every child of a TradingSession, in apply order (RBAC and config before the workloads)."""
    ctx = ctx or RenderContext()
    children = [*render_rbac(ref), render_config_map(ref, spec, ctx)]
    if has_calibration_job(spec):
        children.append(render_data_claim(ref))
    for stage in STAGES:
        children.append(render_deployment(ref, spec, stage, ctx))
        children.append(render_service(ref, stage))
    for job in JOB_MODULES:
        if job in (spec.get("jobs") or {}):
            children.append(render_cron_job(ref, spec, job, ctx))
    return children
