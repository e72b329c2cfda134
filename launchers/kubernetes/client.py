"""A thin wrapper over the official ``kubernetes`` client: the calls the launcher makes, nothing more.

Every call is bounded in time (connect and read timeouts, few retries), and every failure becomes a
``LaunchError`` (or ``NotFoundError`` for a RayJob that is not there) that says what went wrong and
what to do: no traceback from the client library reaches a user.

    client = KubeClient.connect(namespace="gpt-orchestrator", context="kind-dev")
    client.get_rayjob("quickstart-20250101-120000-9f1c0a2b")["status"]

Configuration: a kubeconfig (``kubeconfig`` argument, else ``$KUBECONFIG``, else ``~/.kube/config``)
and its ``context`` (default: the current one); inside a pod without a kubeconfig, the pod's
ServiceAccount (in-cluster configuration).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.errors import LaunchError, NotFoundError

log = logging.getLogger(__name__)

RAY_GROUP, RAY_VERSION, RAYJOBS = "ray.io", "v1", "rayjobs"
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
RETRIES = 2  # urllib3 retries of a failed connection (immediate: bounded by the timeouts above)
KUBERAY_HINT = (
    "install the KubeRay operator 1.7.0 first: helm install kuberay-operator kuberay/kuberay-operator "
    "--version 1.7.0 --namespace kuberay-system --create-namespace (k8s/README.md)"
)


class KubeClient:
    """RayJobs, ConfigMaps, pods and pod logs of one namespace."""

    def __init__(self, api_client, namespace: str, where: str, timeout: tuple[float, float] | None = None):
        from kubernetes import client

        self.namespace = namespace
        self.where = where  # for messages: the context or "in-cluster", and the API server's address
        self.timeout = timeout or (CONNECT_TIMEOUT_S, READ_TIMEOUT_S)  # (connect, read) seconds
        self._api_client = api_client
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)

    @classmethod
    def connect(
        cls,
        namespace: str,
        context: str | None = None,
        kubeconfig: str | None = None,
        timeout: tuple[float, float] | None = None,
    ) -> KubeClient:
        api_client, where = _api_client(context, kubeconfig)
        return cls(api_client, namespace, where, timeout)

    # --- RayJobs ------------------------------------------------------------------------------------

    def create_rayjob(self, body: dict) -> dict:
        return self._call(
            f"create RayJob {body['metadata']['name']}",
            ("create", "rayjobs.ray.io"),
            self._custom.create_namespaced_custom_object,
            RAY_GROUP,
            RAY_VERSION,
            self.namespace,
            RAYJOBS,
            body,
            field_validation="Strict",
        )

    def get_rayjob(self, name: str) -> dict:
        return self._call(
            f"read RayJob {name}",
            ("get", "rayjobs.ray.io"),
            self._custom.get_namespaced_custom_object,
            RAY_GROUP,
            RAY_VERSION,
            self.namespace,
            RAYJOBS,
            name,
            missing=name,
        )

    def list_rayjobs(self, label_selector: str) -> list[dict]:
        answer = self._call(
            "list RayJobs",
            ("list", "rayjobs.ray.io"),
            self._custom.list_namespaced_custom_object,
            RAY_GROUP,
            RAY_VERSION,
            self.namespace,
            RAYJOBS,
            label_selector=label_selector,
        )
        return answer.get("items", [])

    def patch_rayjob(self, name: str, patch: dict) -> dict:
        """A JSON merge patch (the client sends application/merge-patch+json for a dict)."""
        return self._call(
            f"change RayJob {name}",
            ("patch", "rayjobs.ray.io"),
            self._custom.patch_namespaced_custom_object,
            RAY_GROUP,
            RAY_VERSION,
            self.namespace,
            RAYJOBS,
            name,
            patch,
            missing=name,
        )

    def delete_rayjob(self, name: str) -> None:
        self._call(
            f"delete RayJob {name}",
            ("delete", "rayjobs.ray.io"),
            self._custom.delete_namespaced_custom_object,
            RAY_GROUP,
            RAY_VERSION,
            self.namespace,
            RAYJOBS,
            name,
            propagation_policy="Background",
            missing=name,
        )

    # --- ConfigMaps, pods, logs -------------------------------------------------------------------

    def get_configmap(self, name: str) -> dict:
        found = self._call(
            f"read ConfigMap {name}",
            ("get", "configmaps"),
            self._core.read_namespaced_config_map,
            name,
            self.namespace,
            missing=name,
        )
        return self._api_client.sanitize_for_serialization(found)

    def create_configmap(self, body: dict) -> dict:
        created = self._call(
            f"create ConfigMap {body['metadata']['name']}",
            ("create", "configmaps"),
            self._core.create_namespaced_config_map,
            self.namespace,
            body,
            field_validation="Strict",
        )
        return self._api_client.sanitize_for_serialization(created)

    def list_pods(self, label_selector: str) -> list[dict]:
        pods = self._call(
            "list pods",
            ("list", "pods"),
            self._core.list_namespaced_pod,
            self.namespace,
            label_selector=label_selector,
        )
        return self._api_client.sanitize_for_serialization(pods).get("items", [])

    def pod_log(self, pod: str, container: str | None = None) -> str:
        # The raw body, decoded here: the client's own decoding returns the repr of the bytes
        # ("b'...'") in kubernetes 36, and reformats lines that parse as JSON in older releases.
        response = self._call(
            f"read the log of pod {pod}",
            ("get", "pods/log"),
            self._core.read_namespaced_pod_log,
            pod,
            self.namespace,
            container=container,
            _preload_content=False,
        )
        return response.data.decode("utf-8", errors="replace")

    # --- one bounded call, errors for people ------------------------------------------------------

    def _call(
        self, what: str, access: tuple[str, str], fn: Callable, *args, missing: str | None = None, **kw
    ) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, _request_timeout=self.timeout, **kw)
        except ApiException as exc:
            raise self._api_error(what, access, exc, missing) from None
        except (HTTPError, OSError) as exc:
            raise LaunchError(
                f"cannot {what}: the Kubernetes API server ({self.where}) did not answer "
                f"({_first_line(getattr(exc, 'reason', None) or exc)}); "
                "hint: is the cluster running and the kube context right? try `kubectl cluster-info`"
            ) from None

    def _api_error(self, what: str, access: tuple[str, str], exc, missing: str | None) -> Exception:
        status = _status(exc)
        message = status.get("message") or (exc.reason or "").strip() or f"HTTP {exc.status}"
        causes = (status.get("details") or {}).get("causes") or []
        if causes and exc.status == 422:
            message += (
                " (" + "; ".join(f"{c.get('field', '?')}: {c.get('message', '')}" for c in causes) + ")"
            )
        verb, resource = access
        if exc.status == 404 and missing and (status.get("details") or {}).get("name") == missing:
            return NotFoundError(f"no RayJob {missing} in namespace {self.namespace} ({self.where})")
        if exc.status == 404 and "namespaces" in message:
            return LaunchError(
                f"cannot {what}: {message}; hint: create it with `kubectl apply -k k8s/overlays/dev` "
                "(or prod), or set kubernetes.namespace"
            )
        if exc.status == 404 and resource.endswith("ray.io"):
            return LaunchError(
                f"cannot {what}: this cluster does not serve ray.io/v1 RayJobs; hint: {KUBERAY_HINT}"
            )
        return LaunchError(f"cannot {what}: {message}; hint: {self._hint(exc.status, verb, resource)}")

    def _hint(self, code: int, verb: str, resource: str) -> str:
        if code == 401:
            return "the API server refused the credentials: log in again, then `kubectl auth whoami`"
        if code == 403:
            return (
                f"the account needs the Role gpt-orchestrator-submitter of k8s/base/rbac.yaml in namespace "
                f"{self.namespace}; check with `kubectl auth can-i {verb} {resource} -n {self.namespace}`"
            )
        if code == 409:
            return "a RayJob of this name exists already: submit again (a new attempt gets a new name)"
        if code == 422:
            return "the cluster refused the manifest; `orchestrator k8s render SPEC` shows it"
        return "try again; if it persists, look at the API server's health (`kubectl get --raw /readyz`)"


def _api_client(context: str | None, kubeconfig: str | None):
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    # Read $KUBECONFIG now: the client library reads it once, when it is first imported.
    kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or None
    try:
        if kubeconfig or context or _kubeconfig_present() or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_kube_config(
                config_file=kubeconfig,
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
            where = f"context {context or _current_context(kubeconfig)}, {configuration.host}"
        else:
            config.load_incluster_config(client_configuration=configuration)
            where = f"in-cluster, {configuration.host}"
    except (ConfigException, OSError, ValueError) as exc:
        raise LaunchError(
            f"no usable Kubernetes configuration: {_first_line(exc)}; hint: set KUBECONFIG or --kube-context "
            "(`kubectl config get-contexts` lists them)"
        ) from None
    configuration.retries = RETRIES
    return client.ApiClient(configuration), where


def _kubeconfig_present() -> bool:
    paths = os.environ.get("KUBECONFIG", "")
    return (
        any(Path(p).expanduser().exists() for p in paths.split(os.pathsep) if p)
        or (Path.home() / ".kube" / "config").exists()
    )


def _current_context(kubeconfig: str | None) -> str:
    from kubernetes import config

    try:
        _, current = config.list_kube_config_contexts(config_file=kubeconfig)
        return current["name"]
    except Exception:  # only used to name the context in messages
        return "(current)"


def _status(exc) -> dict:
    """The API server's Status object of an error answer, if it sent one."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) and body.get("kind") == "Status" else {}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
