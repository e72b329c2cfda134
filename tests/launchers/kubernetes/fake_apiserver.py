"""A stand-in for the Kubernetes API server and the KubeRay operator, in-process on 127.0.0.1.

No API server can run here, so this one implements exactly what ``KubernetesLauncher`` calls, the
way the real one answers: RayJob create/get/list (label selectors)/delete and JSON merge patch,
ConfigMap create, pod list and pod logs; bearer-token authentication (401), RBAC refusals (403),
``Status`` objects for every error, 404 for unknown paths. Every object it receives (and every
object a patch produces) is checked with ``launchers.kubernetes.validate``, as strictly as the API
server plus the operator would, and refused with 422 otherwise; ``refused`` keeps what it refused.

A RayJob moves through KubeRay's real status sequence, one step per read of it (so a test polls
without sleeping): New -> Initializing (cluster being created) -> Running with the Ray job PENDING
(the submitter Job's pod and the head pod appear) -> Running/RUNNING (the driver prints) ->
Complete/SUCCEEDED or Failed/AppFailed; the ``preRunningDeadline`` script never gets a ready
cluster and ends Failed/PreRunningDeadlineExceeded. Suspending (cancel) and deleting remove the pods.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from launchers.kubernetes.validate import validate_manifest

TOKEN = "test-token-for-the-fake-api-server"
RAYJOBS = "/apis/ray.io/v1/namespaces/{ns}/rayjobs"
PROGRESS = ["[train] step 5/10 loss 5.91\n", "[train] step 10/10 loss 5.12\n"]
SUCCESS_END = "run finished\n"
FAILURE_END = "Traceback (most recent call last):\nRuntimeError: loss is NaN\n"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def script(kind: str, name: str, deadline_s: int) -> list[dict]:
    """The status after each read of a RayJob, as KubeRay v1.7.0 writes it."""
    cluster = f"{name}-x7k2p"
    initializing = {
        "jobDeploymentStatus": "Initializing",
        "jobId": f"{name}-abc12",
        "rayClusterName": cluster,
        "startTime": _now(),
        "rayClusterStatus": {"state": ""},
    }
    if kind == "preRunningDeadline":
        failed = {
            **initializing,
            "jobDeploymentStatus": "Failed",
            "reason": "PreRunningDeadlineExceeded",
            "message": f"The RayJob has passed the preRunningDeadlineSeconds. StartTime: {_now()}. "
            f"PreRunningDeadlineSeconds: {deadline_s}",
        }
        return [initializing, initializing, failed]
    running = {
        **initializing,
        "jobDeploymentStatus": "Running",
        "dashboardURL": f"{cluster}-head-svc:8265",
        "rayClusterStatus": {"state": "ready"},
    }
    end = {
        "jobDeploymentStatus": "Complete",
        "jobStatus": "SUCCEEDED",
        "message": "Job finished successfully.",
    }
    if kind == "fails":
        end = {
            "jobDeploymentStatus": "Failed",
            "jobStatus": "FAILED",
            "reason": "AppFailed",
            "message": "Job entrypoint command failed with exit code 1",
        }
    return [
        initializing,
        {**running, "jobStatus": "PENDING"},
        {**running, "jobStatus": "RUNNING"},
        {**running, "jobStatus": "RUNNING"},
        {**running, **end, "endTime": _now()},
    ]


@dataclass
class FakeCluster:
    """What the fake API server holds; tests read and steer it."""

    namespace: str
    scenario: str = "succeeds"  # the script the next created RayJob follows
    serves_rayjobs: bool = True  # False: a cluster without the KubeRay CRDs
    forbidden: set[tuple[str, str]] = field(default_factory=set)  # (verb, resource) RBAC refuses
    rayjobs: dict[str, dict] = field(default_factory=dict)
    configmaps: dict[str, dict] = field(default_factory=dict)
    pods: dict[str, dict] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    scripts: dict[str, list[dict]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path?query)
    access: list[tuple[str, str]] = field(default_factory=list)  # (verb, resource) as RBAC sees them
    refused: list[tuple[str, list[str]]] = field(default_factory=list)  # (object, violations)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def advance(self, name: str) -> None:
        """One reconcile of KubeRay: the next status of the script, and the pods it implies."""
        steps = self.scripts.get(name)
        if not steps:
            return
        status = steps.pop(0)
        job = self.rayjobs[name]
        job["status"] = status
        submitter, ray_job = f"{name}-sub01", status.get("jobStatus")
        if status.get("jobDeploymentStatus") == "Running" and ray_job == "PENDING":
            self._start_pods(job)
        if ray_job in ("RUNNING", "SUCCEEDED", "FAILED"):  # the driver prints one progress line a step
            printed = sum(line in self.logs[submitter] for line in PROGRESS)
            self.logs[submitter] += "".join(PROGRESS[printed : printed + 1 if ray_job == "RUNNING" else None])
        if ray_job in ("SUCCEEDED", "FAILED"):
            self.logs[submitter] += SUCCESS_END if ray_job == "SUCCEEDED" else FAILURE_END

    def _start_pods(self, job: dict) -> None:
        name, cluster = job["metadata"]["name"], job["status"]["rayClusterName"]
        head = f"{cluster}-head-0"
        self.pods[head] = _pod(head, self.namespace, {"ray.io/cluster": cluster, "ray.io/node-type": "head"})
        self.logs[head] = "Ray runtime started.\n"
        submitter = f"{name}-sub01"
        self.pods[submitter] = _pod(submitter, self.namespace, {"batch.kubernetes.io/job-name": name})
        self.logs[submitter] = f"Job '{job['status']['jobId']}' submitted successfully\n"

    def remove_pods_of(self, name: str) -> None:
        for pod in [
            p
            for p, obj in self.pods.items()
            if name in p or obj["metadata"]["labels"].get("batch.kubernetes.io/job-name") == name
        ]:
            self.pods.pop(pod)
            self.logs.pop(pod, None)


def _pod(name: str, namespace: str, labels: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "creationTimestamp": _now()},
        "spec": {"containers": [{"name": "ray-head" if "head" in name else "submitter", "image": "x"}]},
        "status": {"phase": "Running"},
    }


def status_body(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def matches(labels: dict, selector: str) -> bool:
    """Equality-based label selectors (a=b,c=d), what the launcher sends."""
    for term in filter(None, (selector or "").split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    cluster: FakeCluster  # set on the subclass the server makes

    def log_message(self, *args) -> None:  # quiet: tests read `requests` instead
        pass

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_PATCH(self):
        self._serve("PATCH")

    def do_DELETE(self):
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        cluster = self.cluster
        with cluster.lock:
            cluster.requests.append((method, self.path))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._json(401, status_body(401, "Unauthorized", "Unauthorized"))
            route = _route(method, url.path, cluster.namespace)
            if route is None or (route[1] == "rayjobs.ray.io" and not cluster.serves_rayjobs):
                return self._text(404, "404 page not found\n")
            verb, resource, name, extra = route
            cluster.access.append((verb, resource))
            if (verb, resource) in cluster.forbidden:
                return self._forbidden(verb, resource, name)
            body = self._body() if method in ("POST", "PATCH") else None
            handler = getattr(self, f"_{verb}_{resource.split('.')[0].replace('/', '_')}")
            return handler(name, body, query, extra)

    # --- RayJobs ------------------------------------------------------------------------------------

    def _create_rayjobs(self, _name, body, query, _extra):
        cluster = self.cluster
        if query.get("fieldValidation") != "Strict":
            return self._json(400, status_body(400, "BadRequest", "the fake expects fieldValidation=Strict"))
        if self._refuse(body):
            return None
        name = body["metadata"]["name"]
        if name in cluster.rayjobs:
            return self._json(
                409,
                status_body(
                    409,
                    "AlreadyExists",
                    f'rayjobs.ray.io "{name}" already exists',
                    {"name": name, "group": "ray.io", "kind": "rayjobs"},
                ),
            )
        stored = copy.deepcopy(body)
        stored["metadata"].update(
            uid=str(uuid.uuid4()), creationTimestamp=_now(), resourceVersion="1", generation=1
        )
        cluster.rayjobs[name] = stored
        deadline = body["spec"].get("preRunningDeadlineSeconds", 0)
        cluster.scripts[name] = script(cluster.scenario, name, deadline)
        return self._json(201, stored)

    def _get_rayjobs(self, name, _body, query, _extra):
        cluster = self.cluster
        if name is None:
            items = [
                j
                for j in cluster.rayjobs.values()
                if matches(j["metadata"].get("labels", {}), query.get("labelSelector", ""))
            ]
            return self._json(
                200, {"apiVersion": "ray.io/v1", "kind": "RayJobList", "metadata": {}, "items": items}
            )
        if name not in cluster.rayjobs:
            return self._not_found("rayjobs", name)
        cluster.advance(name)
        return self._json(200, cluster.rayjobs[name])

    def _list_rayjobs(self, name, body, query, extra):
        return self._get_rayjobs(name, body, query, extra)

    def _patch_rayjobs(self, name, body, _query, _extra):
        cluster = self.cluster
        if self.headers.get("Content-Type") != "application/merge-patch+json":
            return self._json(
                415, status_body(415, "UnsupportedMediaType", "the fake takes merge patches only")
            )
        if name not in cluster.rayjobs:
            return self._not_found("rayjobs", name)
        patched = _merge(copy.deepcopy(cluster.rayjobs[name]), body)
        patched.pop("status", None)
        if self._refuse(patched):
            return None
        patched["status"] = cluster.rayjobs[name].get("status", {})
        if patched["spec"].get("suspend") and patched["status"].get("jobDeploymentStatus") in (
            "Initializing",
            "Running",
        ):
            cluster.remove_pods_of(name)
            patched["status"] = {"jobDeploymentStatus": "Suspending", "jobStatus": ""}
            cluster.scripts[name] = [{"jobDeploymentStatus": "Suspended", "jobStatus": ""}]
        cluster.rayjobs[name] = patched
        return self._json(200, patched)

    def _delete_rayjobs(self, name, _body, _query, _extra):
        cluster = self.cluster
        if name not in cluster.rayjobs:
            return self._not_found("rayjobs", name)
        job = cluster.rayjobs.pop(name)
        cluster.scripts.pop(name, None)
        cluster.remove_pods_of(name)
        uid = job["metadata"]["uid"]
        for cm in [
            n
            for n, c in cluster.configmaps.items()
            if any(o["uid"] == uid for o in c["metadata"].get("ownerReferences", []))
        ]:
            cluster.configmaps.pop(cm)  # what the garbage collector does with owned objects
        return self._json(
            200,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Success",
                "details": {"name": name, "group": "ray.io", "kind": "rayjobs", "uid": uid},
            },
        )

    # --- ConfigMaps, pods, logs -------------------------------------------------------------------

    def _create_configmaps(self, _name, body, query, _extra):
        if query.get("fieldValidation") != "Strict":
            return self._json(400, status_body(400, "BadRequest", "the fake expects fieldValidation=Strict"))
        if self._refuse(body):
            return None
        stored = copy.deepcopy(body)
        stored["metadata"].update(uid=str(uuid.uuid4()), creationTimestamp=_now(), resourceVersion="1")
        self.cluster.configmaps[body["metadata"]["name"]] = stored
        return self._json(201, stored)

    def _get_configmaps(self, name, _body, _query, _extra):
        if name not in self.cluster.configmaps:
            return self._not_found("configmaps", name)
        return self._json(200, self.cluster.configmaps[name])

    def _list_pods(self, _name, _body, query, _extra):
        items = [
            p
            for p in self.cluster.pods.values()
            if matches(p["metadata"]["labels"], query.get("labelSelector"))
        ]
        return self._json(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})

    def _get_pods_log(self, name, _body, _query, _extra):
        if name not in self.cluster.pods:
            return self._not_found("pods", name)
        return self._text(200, self.cluster.logs.get(name, ""))

    # --- answers ----------------------------------------------------------------------------------

    def _refuse(self, obj: dict) -> bool:
        problems = [str(v) for v in validate_manifest(obj)]
        if not problems:
            return False
        self.cluster.refused.append((obj.get("metadata", {}).get("name", "?"), problems))
        causes = [
            {"reason": "FieldValueInvalid", "message": p.split(": ", 1)[-1], "field": p.split(": ", 1)[0]}
            for p in problems
        ]
        name = obj.get("metadata", {}).get("name", "")
        self._json(
            422,
            status_body(
                422,
                "Invalid",
                f'{obj.get("kind")} "{name}" is invalid',
                {"name": name, "kind": obj.get("kind"), "causes": causes},
            ),
        )
        return True

    def _forbidden(self, verb: str, resource: str, name: str | None):
        plural, _, group = resource.partition(".")
        who = 'User "system:serviceaccount:ci:runner"'
        message = (
            f"{resource} {f'{name!r} ' if name else ''}is forbidden: {who} cannot {verb} resource "
            f'"{plural}" in API group "{group}" in the namespace "{self.cluster.namespace}"'
        )
        return self._json(
            403, status_body(403, "Forbidden", message, {"name": name, "group": group, "kind": plural})
        )

    def _not_found(self, plural: str, name: str):
        group = "ray.io" if plural == "rayjobs" else ""
        resource = f"{plural}.{group}" if group else plural
        message = f'{resource} "{name}" not found'
        return self._json(
            404, status_body(404, "NotFound", message, {"name": name, "group": group, "kind": plural})
        )

    def _body(self) -> dict:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")

    def _json(self, code: int, body: dict) -> None:
        self._send(code, json.dumps(body).encode(), "application/json")

    def _text(self, code: int, text: str) -> None:
        self._send(code, text.encode(), "text/plain")

    def _send(self, code: int, payload: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _route(method: str, path: str, namespace: str) -> tuple[str, str, str | None, str | None] | None:
    """(verb, resource, name, subresource) as RBAC names them, for the paths the fake serves."""
    rayjobs = RAYJOBS.format(ns=namespace)
    core = f"/api/v1/namespaces/{namespace}"
    if path == rayjobs:
        return {
            "POST": ("create", "rayjobs.ray.io", None, None),
            "GET": ("list", "rayjobs.ray.io", None, None),
        }.get(method)
    if path.startswith(rayjobs + "/") and path.count("/") == rayjobs.count("/") + 1:
        verb = {"GET": "get", "PATCH": "patch", "DELETE": "delete"}.get(method)
        return (verb, "rayjobs.ray.io", path.rsplit("/", 1)[1], None) if verb else None
    if path == f"{core}/configmaps" and method == "POST":
        return "create", "configmaps", None, None
    if path.startswith(f"{core}/configmaps/") and path.count("/") == core.count("/") + 2 and method == "GET":
        return "get", "configmaps", path.rsplit("/", 1)[1], None
    if path == f"{core}/pods" and method == "GET":
        return "list", "pods", None, None
    if path.startswith(f"{core}/pods/") and path.endswith("/log") and method == "GET":
        return "get", "pods/log", path.split("/")[-2], "log"
    return None


def _merge(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    target = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = _merge(target.get(key), value)
    return target


class FakeApiServer:
    """``with FakeApiServer("ns") as server:`` serves ``server.cluster`` at ``server.url``."""

    def __init__(self, namespace: str):
        self.cluster = FakeCluster(namespace)
        handler = type("Handler", (_Handler,), {"cluster": self.cluster})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        namespace = self.cluster.namespace
        fresh = FakeCluster(namespace)
        self.cluster.__dict__.update(fresh.__dict__)


def write_kubeconfig(path, server: str, namespace: str, token: str = TOKEN, context: str = "fake") -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {"token": token}}],
        "contexts": [
            {"name": context, "context": {"cluster": "fake", "user": "tester", "namespace": namespace}}
        ],
        "current-context": context,
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return str(path)


def access_of_every_launcher_call(directory) -> set[tuple[str, str]]:
    """(verb, resource) of every request a submit, status, logs, cancel (both ways) and list make."""
    from launchers.kubernetes import KubernetesLauncher, RunIdentity
    from orchestrator.spec import parse_spec

    text = "name: rbac\ncluster: {backend: kubernetes}\nkubernetes: {namespace: ns, worker_memory: 2Gi}\n"
    spec = parse_spec(text)
    with FakeApiServer("ns") as server:
        settings = {"metadata": {"name": "gpt-orchestrator-settings"}, "data": {"training-image": "i:1"}}
        server.cluster.configmaps["gpt-orchestrator-settings"] = settings  # the overlay's
        launcher = KubernetesLauncher(
            "ns", kubeconfig=write_kubeconfig(directory / "config", server.url, "ns")
        )
        jobs = [launcher.submit_run(spec, RunIdentity(f"{n}" * 32, f"rbac-{n}", text)).job_id for n in (1, 2)]
        list(launcher.logs(jobs[0], follow=True, poll_s=0))
        launcher.status(jobs[1])
        launcher.cancel(jobs[1])
        launcher.list()
        launcher.cancel(jobs[0], delete=True)
        assert server.cluster.refused == []
        return set(server.cluster.access)
