"""MLflow helpers: the one module that imports mlflow.

Configuration comes from the environment, as the TradingSession's CronJobs set it:

* ``MLFLOW_TRACKING_URI`` (required): ``http(s)://host:port`` of a tracking server, or a local
  store (``file:``, ``sqlite:``, ``postgresql:``, ``mysql:``);
* ``DREAMBOT_MLFLOW_EXPERIMENT`` (default ``dreambot``): the experiment, created on first use.

Problems are :class:`TrackingError` lines (a CLI prints them and exits 2). A server URI is probed
on ``/health`` first, so an unreachable server fails in seconds instead of after the client's
retries.
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

# mlflow retries refused connections for minutes by default; a job should fail fast and say why.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
# The jobs' stdout is theirs (a summary, then the run id): no "View run at ..." lines from the client.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

import mlflow
from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

URI_ENV: Final = "MLFLOW_TRACKING_URI"
EXPERIMENT_ENV: Final = "DREAMBOT_MLFLOW_EXPERIMENT"
DEFAULT_EXPERIMENT: Final = "dreambot"
SCHEMES: Final = ("http", "https", "file", "sqlite", "postgresql", "mysql")
MAX_PARAM_CHARS: Final = 6000


class TrackingError(RuntimeError):
    """The tracking server or its configuration is unusable; the message is one readable line."""


@dataclass(frozen=True, slots=True)
class TrackingConfig:
    """Where runs go."""

    uri: str
    experiment: str


def tracking_config(env: Mapping[str, str] | None = None) -> TrackingConfig:
    """Read and check ``MLFLOW_TRACKING_URI`` and ``DREAMBOT_MLFLOW_EXPERIMENT``."""
    env = os.environ if env is None else env
    uri = env.get(URI_ENV, "").strip()
    if not uri:
        raise TrackingError(f"{URI_ENV} is not set (e.g. http://mlflow:5000)")
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    if scheme not in SCHEMES:
        raise TrackingError(f"{URI_ENV}={uri!r}: scheme must be one of {', '.join(SCHEMES)}")
    if scheme in ("http", "https") and not uri.split("://", 1)[-1].strip("/"):
        raise TrackingError(f"{URI_ENV}={uri!r}: no host")
    experiment = env.get(EXPERIMENT_ENV, DEFAULT_EXPERIMENT).strip()
    if not experiment:
        raise TrackingError(f"{EXPERIMENT_ENV} is empty (unset it for {DEFAULT_EXPERIMENT!r})")
    if len(experiment) > 500:
        raise TrackingError(f"{EXPERIMENT_ENV} is longer than 500 characters")
    return TrackingConfig(uri, experiment)


def check_server(config: TrackingConfig, timeout_s: float = 5.0) -> None:
    """For a server URI, GET ``/health``; TrackingError if it does not answer OK."""
    if not config.uri.lower().startswith(("http://", "https://")):
        return
    url = config.uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            if resp.status != 200:
                raise TrackingError(f"MLflow at {config.uri} answered /health with HTTP {resp.status}")
    except urllib.error.HTTPError as exc:
        raise TrackingError(f"MLflow at {config.uri} answered /health with HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(f"cannot reach MLflow at {config.uri}: {reason}") from None


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:MAX_PARAM_CHARS]


class Run:
    """One MLflow run: params, metrics and artifacts go through the tracking client."""

    def __init__(self, client: MlflowClient, run_id: str, experiment_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Parameters (values as text; nested mappings flattened to dotted keys)."""
        flat = flatten(params)
        batch = [Param(k, _param_text(v)) for k, v in sorted(flat.items())]
        for i in range(0, len(batch), 100):
            self.client.log_batch(self.run_id, params=batch[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float | int | None], step: int = 0) -> None:
        """Numeric metrics (None and non-finite values are skipped)."""
        batch = [
            Metric(k, float(v), 0, step)
            for k, v in sorted(metrics.items())
            if v is not None and not isinstance(v, bool) and math.isfinite(float(v))
        ]
        for i in range(0, len(batch), 500):
            self.client.log_batch(self.run_id, metrics=batch[i : i + 500])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in sorted(tags.items()):
            self.client.set_tag(self.run_id, key, value)

    def log_json(self, doc: Any, artifact_file: str) -> None:
        """A JSON artifact (sorted keys, indented)."""
        self.client.log_text(
            self.run_id, json.dumps(doc, sort_keys=True, indent=2, allow_nan=False) + "\n", artifact_file
        )

    def log_file(self, path: Path, artifact_path: str | None = None) -> None:
        """A local file as an artifact (under ``artifact_path`` if given)."""
        self.client.log_artifact(self.run_id, str(path), artifact_path)


@contextmanager
def start_run(config: TrackingConfig, run_name: str, tags: Mapping[str, str] | None = None) -> Iterator[Run]:
    """A run in the configured experiment (created if missing); FINISHED on success, FAILED on error."""
    client = MlflowClient(tracking_uri=config.uri)
    try:
        experiment = client.get_experiment_by_name(config.experiment)
        experiment_id = (
            experiment.experiment_id if experiment is not None else client.create_experiment(config.experiment)
        )
        created = client.create_run(experiment_id, run_name=run_name, tags=dict(tags or {}))
    except MlflowException as exc:
        raise TrackingError(f"MLflow at {config.uri}: {exc.message.splitlines()[0]}") from None
    run = Run(client, created.info.run_id, experiment_id)
    try:
        yield run
    except BaseException:
        client.set_terminated(run.run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(run.run_id, RunStatus.to_string(RunStatus.FINISHED))


def download_json(config: TrackingConfig, run_id: str, artifact_file: str) -> Any:
    """A JSON artifact of a run, parsed (e.g. ``learner_state.json`` to load into a LearnerEngine)."""
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_file, tracking_uri=config.uri)
    except MlflowException as exc:
        raise TrackingError(f"run {run_id}: cannot read {artifact_file}: {exc.message.splitlines()[0]}") from None
    return json.loads(Path(local).read_text(encoding="utf-8"))
