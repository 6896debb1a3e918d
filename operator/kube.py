"""The few Kubernetes API calls the operator makes, on plain dicts.

Children are written with server-side apply (field manager ``dreambot-operator``, conflicts forced):
applying the same manifest twice is a no-op and a changed manifest patches only what changed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from dreambot_operator.render import API_VERSION, KIND, MANAGED_BY, PLURAL, Manifest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

FIELD_MANAGER: Final = MANAGED_BY

# (apiVersion, kind) -> collection path of a namespaced resource
_COLLECTIONS: Final[Mapping[tuple[str, str], str]] = {
    ("v1", "ConfigMap"): "/api/v1/namespaces/{ns}/configmaps",
    ("v1", "Secret"): "/api/v1/namespaces/{ns}/secrets",
    ("v1", "Service"): "/api/v1/namespaces/{ns}/services",
    ("v1", "ServiceAccount"): "/api/v1/namespaces/{ns}/serviceaccounts",
    ("v1", "PersistentVolumeClaim"): "/api/v1/namespaces/{ns}/persistentvolumeclaims",
    ("apps/v1", "Deployment"): "/apis/apps/v1/namespaces/{ns}/deployments",
    ("batch/v1", "CronJob"): "/apis/batch/v1/namespaces/{ns}/cronjobs",
    ("batch/v1", "Job"): "/apis/batch/v1/namespaces/{ns}/jobs",
    ("rbac.authorization.k8s.io/v1", "Role"): "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"):
        "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    (API_VERSION, KIND): f"/apis/{API_VERSION}/namespaces/{{ns}}/{PLURAL}",
}

# Kinds the operator creates for a session, in the order they are pruned. The data volume
# (PersistentVolumeClaim) is never pruned: dropping the calibration job must not delete its history;
# it goes with the session (owner reference).
CHILD_KINDS: Final = (
    ("batch/v1", "CronJob"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("v1", "ServiceAccount"),
)


class KubeError(RuntimeError):
    """An API call failed; ``status`` is the HTTP status (0 when no response came back)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status

    @property
    def permanent(self) -> bool:
        """True for errors a retry cannot fix (the request itself is invalid or forbidden)."""
        return self.status in (400, 403, 422)


def load_api_client() -> client.ApiClient:
    """ApiClient from the in-cluster service account, else from KUBECONFIG / ~/.kube/config."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


def _path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    try:
        base = _COLLECTIONS[(api_version, kind)].format(ns=namespace)
    except KeyError:
        raise KubeError(f"no API path known for {kind} {api_version}") from None
    return f"{base}/{name}" if name else base


def _message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
        return str(body.get("message") or exc.reason)
    except (TypeError, ValueError):
        return str(exc.reason or exc)


class Kube:
    """Typed-by-dict access to the API server for the operator's handlers."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api = api_client

    def _request(self, method: str, path: str, *, body: Any = None,
                 query: list[tuple[str, Any]] | None = None,
                 content_type: str = "application/json") -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        request = self.api.param_serialize(
            method, path, query_params=query or [], header_params=headers, body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(*request, _request_timeout=30)
            if not 200 <= response.status <= 299:
                response.read()  # type: ignore[no-untyped-call]
                self.api.response_deserialize(response, {})
            raw = response.read()  # type: ignore[no-untyped-call]
        except ApiException as exc:
            raise KubeError(f"{method} {path}: {exc.status} {_message(exc)}", int(exc.status or 0)) from None
        return json.loads(raw) if raw else None

    def apply(self, manifest: Manifest) -> Manifest:
        """Server-side apply ``manifest`` (create or patch; idempotent)."""
        meta = manifest["metadata"]
        path = _path(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
        result: Manifest = self._request(
            "PATCH", path, body=manifest, content_type="application/apply-patch+yaml",
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        )
        return result

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Manifest | None:
        try:
            result: Manifest = self._request("GET", _path(api_version, kind, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[Manifest]:
        result = self._request("GET", _path(api_version, kind, namespace),
                               query=[("labelSelector", selector)])
        return list(result.get("items") or [])

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        try:
            self._request("DELETE", _path(api_version, kind, namespace, name),
                          body={"propagationPolicy": "Background"})
        except KubeError as exc:
            if exc.status != 404:
                raise

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patch the TradingSession's status subresource."""
        path = _path(API_VERSION, KIND, namespace, name) + "/status"
        self._request("PATCH", path, body={"status": dict(status)},
                      content_type="application/merge-patch+json")
