"""Offline validation of Kubernetes manifests, as strict as the API server and the KubeRay operator.

No API server runs where manifests are written or tested, so this module checks what one would:

- built-in kinds (Deployment, Service, ConfigMap, ...) against the Kubernetes OpenAPI schemas that
  ``kubernetes-validate`` bundles, strictly (a misspelled field is an error, as with kubectl's
  default ``--validate=strict``), plus quantities, which those schemas leave unchecked;
- KubeRay kinds (RayJob, RayCluster, RayService) against the CRDs of KubeRay ``KUBERAY_VERSION``
  vendored in ``k8s/crds/``: their OpenAPI schema made to behave like the API server (unknown fields
  refused, defaulted fields not required, ``nullable``), list-map keys unique, the CRDs' CEL rules
  (``x-kubernetes-validations``; transition rules on ``oldSelf`` need an old object and are skipped);
- the rules the KubeRay operator enforces in code before it acts (name length, TTL only with
  ``shutdownAfterJobFinishes``, suspend, submission modes, group sizes, token auth), which would
  otherwise surface only as a RayJob in ``ValidationFailed`` on a live cluster;
- object metadata: names, label and annotation syntax.

>>> problems = validate_manifest({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"},
...                               "data": {"a": "b"}, "dataa": {}})
>>> [str(p) for p in problems]
['dataa: unknown field, did you mean `data`? (kubernetes schema)']
"""

from __future__ import annotations

import copy
import difflib
import functools
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launchers.kubernetes import kuberay_rules
from orchestrator.errors import PlanError

KUBERAY_VERSION = "v1.7.0"
KUBERNETES_VERSION = "1.32.0"  # the schemas built-in kinds are checked against
CRD_DIR = Path(__file__).resolve().parents[2] / "k8s" / "crds" / f"kuberay-{KUBERAY_VERSION}"
CRD_FILES = {
    "RayJob": "ray.io_rayjobs.yaml",
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayService": "ray.io_rayservices.yaml",
}
QUANTITY = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Violation:
    """One reason the API server or the operator would refuse a manifest."""

    path: str  # dotted, with [i] for list items, from the document's root
    message: str
    source: str  # "kubernetes schema", "CRD schema", "CRD rule", "KubeRay", "metadata"

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.message} ({self.source})"


class ManifestError(PlanError):
    """A rendered manifest would be refused by the API server or by the KubeRay operator."""


def check_manifests(documents: list[dict]) -> None:
    """Raise ManifestError naming every problem of every document, or return quietly."""
    lines = []
    for doc in documents:
        lines += [f"  {_describe(doc)} {v}" for v in validate_manifest(doc)]
    if lines:
        raise ManifestError(
            "the manifests would be refused:\n" + "\n".join(lines) + "\nhint: this is a bug in the renderer "
            "or in the kubernetes section of the spec; fix the field named above"
        )


def validate_manifest(doc: dict) -> list[Violation]:
    """Every problem of one manifest (a dict as `yaml.safe_load` gives it)."""
    if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
        return [
            Violation("", "not a Kubernetes object: apiVersion and kind are required", "kubernetes schema")
        ]
    problems = list(_metadata_problems(doc.get("metadata"), "metadata"))
    if doc["kind"] in CRD_FILES and doc["apiVersion"].startswith("ray.io/"):
        problems += validate_custom_resource(doc)
    else:
        problems += validate_builtin(doc)
    return problems


def validate_custom_resource(doc: dict) -> list[Violation]:
    """A KubeRay object against its CRD (schema, list-map keys, CEL rules) and the operator's rules.
    Without the vendored CRDs (an installed package, not a source checkout) only the operator's rules."""
    if not crd_available():
        log.warning("the KubeRay CRDs are not in %s: checking %s without them", CRD_DIR, doc["kind"])
        return [Violation(p, m, "KubeRay") for p, m in kuberay_rules.check(_without_nulls(doc))]
    schema = crd_schema(doc["kind"], doc["apiVersion"])
    if schema is None:
        return [Violation("apiVersion", f"{doc['apiVersion']} does not serve {doc['kind']}", "CRD schema")]
    doc = _without_nulls(doc)  # the API server prunes nulls before it validates
    problems = [_schema_violation(e, "CRD schema") for e in _validator(doc["kind"], doc["apiVersion"])(doc)]
    if problems:  # the rules below assume the shape is right
        return problems
    problems += _list_key_problems(schema, doc, "")
    problems += _cel_problems(schema, doc, "")
    defaulted = _with_defaults(schema, doc)  # the operator sees the object as the server stored it
    problems += [Violation(path, message, "KubeRay") for path, message in kuberay_rules.check(defaulted)]
    return problems


def validate_builtin(doc: dict, version: str = KUBERNETES_VERSION) -> list[Violation]:
    """A built-in kind against the Kubernetes OpenAPI schema of ``version``, strictly (skipped, with a
    note in the log, where kubernetes-validate is not installed: it is a development dependency)."""
    kubernetes_validate = _optional("kubernetes_validate")
    if kubernetes_validate is None:
        return list(_quantity_problems(doc, ""))
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [
            Violation(
                "kind", f"no {doc['apiVersion']} {doc['kind']} in Kubernetes {version}", "kubernetes schema"
            )
        ]
    except kubernetes_validate.ValidationError as exc:
        return [_schema_violation(exc, "kubernetes schema")]
    return list(_quantity_problems(doc, ""))


# --- CRD schemas --------------------------------------------------------------------------------


@functools.cache
def _crd(kind: str) -> dict | None:
    import yaml

    path = CRD_DIR / CRD_FILES[kind]
    if not path.exists():
        return None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the CRDs are megabytes of YAML
    with path.open("rb") as handle:
        return yaml.load(handle, Loader=loader)


def crd_available() -> bool:
    """Whether the vendored CRDs are where this module expects them (a source checkout)."""
    return all((CRD_DIR / name).exists() for name in CRD_FILES.values())


@functools.cache
def crd_schema(kind: str, api_version: str) -> dict | None:
    """The CRD's OpenAPI schema for ``api_version``, prepared to behave like the API server."""
    crd = _crd(kind)
    if crd is None:
        raise ManifestError(f"the KubeRay CRDs are not in {CRD_DIR}; hint: run from a source checkout")
    group, _, version = api_version.partition("/")
    if crd["spec"]["group"] != group or crd["spec"]["names"]["kind"] != kind:
        return None
    for served in crd["spec"]["versions"]:
        if served["name"] == version and served.get("served", True):
            return _like_api_server(served["schema"]["openAPIV3Schema"])
    return None


def _like_api_server(schema: dict) -> dict:
    """Unknown fields refused (kubectl's strict field validation), fields with a default not
    required (the server defaults before it validates), ``nullable`` as JSON Schema's null type."""
    node = copy.deepcopy(schema)
    for sub in _schema_nodes(node):
        props = sub.get("properties")
        open_ended = "additionalProperties" in sub or sub.get("x-kubernetes-preserve-unknown-fields")
        if props is not None and not open_ended:
            sub["additionalProperties"] = False
        if props is not None and "required" in sub:
            sub["required"] = [name for name in sub["required"] if "default" not in props.get(name, {})]
        if sub.get("nullable") and isinstance(sub.get("type"), str):
            sub["type"] = [sub["type"], "null"]
    return node


def _schema_nodes(node: dict) -> Iterator[dict]:
    yield node
    for child in node.get("properties", {}).values():
        yield from _schema_nodes(child)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _schema_nodes(node[key])
    for key in ("anyOf", "allOf", "oneOf"):
        for child in node.get(key, []):
            yield from _schema_nodes(child)


@functools.cache
def _validator(kind: str, api_version: str):
    import jsonschema

    return jsonschema.Draft7Validator(crd_schema(kind, api_version)).iter_errors


# --- turning errors into violations -------------------------------------------------------------


def _schema_violation(error, source: str) -> Violation:
    path = format_path(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        name = unknown[0] if unknown else "?"
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f", did you mean `{close[0]}`?" if close else ""
        return Violation(join_path(path, name), f"unknown field{hint}", source)
    if error.validator == "required":
        missing = re.search(r"'([^']+)' is a required property", error.message)
        field = missing.group(1) if missing else "?"
        return Violation(join_path(path, field), "required field is missing", source)
    if error.validator == "pattern" and "[KMGTPE]i" in str(error.validator_value):  # a resource.Quantity
        return Violation(path, f"{error.instance!r} is not a valid quantity", source)
    return Violation(path, error.message, source)


def format_path(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def join_path(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _describe(doc: Any) -> str:
    if not isinstance(doc, dict):
        return "<not an object>"
    name = (doc.get("metadata") or {}).get("name", "?")
    return f"{doc.get('kind', '?')}/{name}"


# --- what JSON Schema does not express ----------------------------------------------------------


@functools.cache
def _optional(module: str):
    """A checking library of the development extras, or None (logged once) where it is missing."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        log.info("%s is not installed: its part of the manifest checks is skipped", module)
        return None


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _with_defaults(schema: dict, value: Any) -> Any:
    """``value`` with the schema's defaults filled in where fields are missing, as the API server does."""
    if isinstance(value, dict):
        filled = {
            key: copy.deepcopy(sub["default"])
            for key, sub in schema.get("properties", {}).items()
            if "default" in sub and key not in value
        }
        filled.update(value)
        children = {key: (sub, child) for sub, child, key in _children(schema, filled, "")}
        return {
            key: _with_defaults(*children[key]) if key in children else child for key, child in filled.items()
        }
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_with_defaults(schema["items"], child) for child in value]
    return value


def _children(schema: dict, value: Any, path: str) -> Iterator[tuple[dict, Any, str]]:
    """(schema, value, path) of each child of ``value`` that its schema describes."""
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        for key, child in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                yield sub, child, join_path(path, key)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, child in enumerate(value):
            yield schema["items"], child, f"{path}[{index}]"


def _list_key_problems(schema: dict, value: Any, path: str) -> list[Violation]:
    """Items of ``x-kubernetes-list-type: map`` lists are unique by their keys (defaults count);
    those of ``set`` lists are unique, as the API server enforces."""
    problems: list[Violation] = []
    kind = schema.get("x-kubernetes-list-type")
    if isinstance(value, list) and kind in ("map", "set"):
        keys = schema.get("x-kubernetes-list-map-keys", [])
        item_props = schema.get("items", {}).get("properties", {})
        seen: dict[str, int] = {}
        for index, item in enumerate(value):
            if kind == "map" and isinstance(item, dict):
                identity = repr([item.get(k, item_props.get(k, {}).get("default")) for k in keys])
            else:
                identity = repr(item)
            if identity in seen:
                what = ", ".join(keys) if kind == "map" else "value"
                problems.append(
                    Violation(f"{path}[{index}]", f"duplicate {what} (as [{seen[identity]}])", "CRD schema")
                )
            seen.setdefault(identity, index)
    for sub, child, child_path in _children(schema, value, path):
        problems += _list_key_problems(sub, child, child_path)
    return problems


def _cel_problems(schema: dict, value: Any, path: str) -> list[Violation]:
    """Evaluate the CRD's ``x-kubernetes-validations`` with cel-python, ``self`` bound to the value.
    Transition rules (``oldSelf``) compare with a stored object, which a new manifest does not have."""
    problems: list[Violation] = []
    for rule in schema.get("x-kubernetes-validations", []):
        if "oldSelf" in rule["rule"] or _optional("celpy") is None:
            continue
        if not _cel_passes(rule["rule"], value):
            problems.append(Violation(path, rule.get("message") or f"fails rule {rule['rule']}", "CRD rule"))
    for sub, child, child_path in _children(schema, value, path):
        problems += _cel_problems(sub, child, child_path)
    return problems


def _cel_passes(rule: str, value: Any) -> bool:
    import celpy

    try:
        result = _cel_program(rule).evaluate({"self": celpy.json_to_cel(value)})
    except Exception:  # a rule that cannot be evaluated fails, as on the API server
        return False
    # anything but a boolean true (an evaluation error comes back as a value) is a failure
    return isinstance(result, celpy.celtypes.BoolType) and bool(result)


@functools.cache
def _cel_program(rule: str):
    import celpy

    environment = celpy.Environment()
    return environment.program(environment.compile(rule))


def _metadata_problems(metadata: Any, path: str) -> Iterator[Violation]:
    if not isinstance(metadata, dict):
        yield Violation(path, "metadata is required", "metadata")
        return
    name = metadata.get("name")
    if not name and not metadata.get("generateName"):
        yield Violation(join_path(path, "name"), "a name is required", "metadata")
    elif name and (len(name) > 253 or not _DNS_SUBDOMAIN.match(name)):
        yield Violation(join_path(path, "name"), f"{name!r} is not a DNS-1123 subdomain", "metadata")
    for key, value in (metadata.get("labels") or {}).items():
        if not _qualified_name(key):
            yield Violation(f"{path}.labels.{key}", "not a valid label key", "metadata")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            yield Violation(f"{path}.labels.{key}", f"{value!r} is not a valid label value", "metadata")
    for key in metadata.get("annotations") or {}:
        if not _qualified_name(key):
            yield Violation(f"{path}.annotations.{key}", "not a valid annotation key", "metadata")


def _qualified_name(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_LABEL_NAME.match(name))


def _quantity_problems(value: Any, path: str) -> Iterator[Violation]:
    """Resource quantities (limits, requests, sizeLimit, storage, ...) that the API server would
    refuse; the bundled OpenAPI schemas accept any string there."""
    if isinstance(value, dict):
        for key, child in value.items():
            child_path = join_path(path, key)
            if key in ("limits", "requests", "capacity", "hard") and isinstance(child, dict):
                for name, amount in child.items():
                    if not _is_quantity(amount):
                        yield Violation(
                            f"{child_path}.{name}", f"{amount!r} is not a valid quantity", "kubernetes schema"
                        )
            elif key == "sizeLimit" and not _is_quantity(child):
                yield Violation(child_path, f"{child!r} is not a valid quantity", "kubernetes schema")
            else:
                yield from _quantity_problems(child, child_path)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _quantity_problems(child, f"{path}[{index}]")


def _is_quantity(amount: Any) -> bool:
    return isinstance(amount, int) or (isinstance(amount, str) and bool(QUANTITY.match(amount)))
