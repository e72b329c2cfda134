"""Dependencies point one way, and every module imports on its own.

The layers, lowest first (a module may import its own layer and the ones below, never above):

    base helpers (errors, text, fsutil, jsonfloat, interrupts, masking, storage)
    < spec < data < plan < the documented artifacts (report.artifacts, report.summary: pure writers)
    < track < report < train < generate/export
    < lifecycle < launchers < sweep < the command line (cli, cli_parser, progress, __main__)

Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

LAYERS = [
    ["orchestrator.errors", "orchestrator.masking", "orchestrator.text", "orchestrator.fsutil",
     "orchestrator.jsonfloat", "orchestrator.net", "orchestrator.interrupts", "orchestrator.imports",
     "orchestrator",
     "orchestrator.storage"],
    ["orchestrator.spec"],
    ["orchestrator.data"],
    ["orchestrator.plan"],
    ["orchestrator.report.artifacts", "orchestrator.report.summary"],
    ["orchestrator.track"],
    ["orchestrator.report"],
    ["orchestrator.train"],
    ["orchestrator.generate", "orchestrator.export"],
    ["orchestrator.lifecycle"],
    ["launchers"],
    ["orchestrator.sweep"],
    ["orchestrator.cli", "orchestrator.cli_parser", "orchestrator.progress", "orchestrator.__main__"],
]  # fmt: skip


def project_modules() -> list[str]:
    names = []
    for package in ("orchestrator", "launchers"):
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def layer_of(module: str) -> int:
    """The layer of the longest prefix that names one."""
    best, found = -1, None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), index
    assert found is not None, f"{module} belongs to no layer: add it to LAYERS"
    return found


def imports_of(module: str) -> list[tuple[str, int]]:
    """(imported project module, line) for every import statement in the module, lazy ones too."""
    path = REPO / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
    return [(name, line) for name, line in found if name.split(".")[0] in ("orchestrator", "launchers")]


def test_every_module_has_a_layer_and_imports_only_downwards():
    upward = []
    for module in project_modules():
        mine = layer_of(module)
        for imported, line in imports_of(module):
            target = _existing_module(imported)
            if layer_of(target) > mine:
                upward.append(f"{module}:{line} imports {target} (layer {layer_of(target)} > {mine})")
    assert not upward, "\n".join(upward)


def _existing_module(name: str) -> str:
    """`orchestrator.track.runs.JobState` -> `orchestrator.track.runs` (drop imported attributes)."""
    parts = name.split(".")
    while parts:
        path = REPO / Path(*parts)
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    raise AssertionError(f"{name} is not a module of this project")


def test_the_layer_rule_catches_an_upward_import():
    assert layer_of("orchestrator.track.runs") < layer_of("orchestrator.report.compare")
    assert layer_of("orchestrator.train.worker") < layer_of("launchers.ray_local")
    assert layer_of("orchestrator.lifecycle.run") < layer_of("orchestrator.cli")


PROBE = """
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m.split(".")[0] in ("orchestrator", "launchers")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + "\\n" + traceback.format_exc(limit=3))
print("\\n".join(failed) or "OK")
"""


@pytest.mark.slow
def test_every_module_imports_first_on_its_own():
    """Imported first, in a process where no other project module is loaded yet, every module works:
    an import cycle fails here even when the usual import order hides it."""
    modules = [m for m in project_modules() if m != "orchestrator.__main__"]
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *modules], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.stdout.strip() == "OK", result.stdout[-5000:] + result.stderr[-3000:]


# --- one module for each vocabulary that must not drift ------------------------------------------

MASKING_MODULE = "orchestrator.masking"
STATUS_MODULE = "orchestrator.track.runs"
MLFLOW_STATUSES = {"FINISHED", "FAILED", "KILLED", "RUNNING", "SCHEDULED"}
# KubeRay's own job statuses (a RayJob's `jobStatus`), another vocabulary that happens to share words
OTHER_STATUS_VOCABULARIES = {"launchers.kubernetes"}
_SECRET_PATTERN_WORDS = re.compile(r"://|password|passwd|secret|token|credential|api_?key", re.IGNORECASE)


def string_constants(module: str) -> list[tuple[str, int]]:
    """(text, line) of every string constant of a module except docstrings."""
    path = REPO / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.value, node.lineno)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def regex_patterns(module: str) -> list[tuple[str, int]]:
    """(pattern, line) of every literal pattern handed to the `re` module."""
    path = REPO / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "re"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.args[0].value, node.lineno))
    return found


def test_secrets_are_masked_by_one_module():
    """The mask (`***`) and every pattern that finds a secret (a password in a URI, a secret's name)
    live in orchestrator/masking.py; everything else calls it."""
    elsewhere = []
    for module in project_modules():
        if module == MASKING_MODULE:
            continue
        elsewhere += [
            f"{module}:{line} masks with {text!r}" for text, line in string_constants(module) if "***" in text
        ]
        elsewhere += [
            f"{module}:{line} finds secrets with the pattern {pattern!r}"
            for pattern, line in regex_patterns(module)
            if _SECRET_PATTERN_WORDS.search(pattern)
        ]
    assert not elsewhere, "\n".join(elsewhere)


def test_run_statuses_are_spelled_in_one_module():
    """MLflow's run statuses are named in orchestrator/track/runs.py; everything else imports them."""
    elsewhere = []
    for module in project_modules():
        if module == STATUS_MODULE or any(module.startswith(other) for other in OTHER_STATUS_VOCABULARIES):
            continue
        elsewhere += [
            f"{module}:{line} spells the status {text!r}"
            for text, line in string_constants(module)
            if text in MLFLOW_STATUSES
        ]
    assert not elsewhere, "\n".join(elsewhere)


# --- MLflow lives in the tracker ----------------------------------------------------------------

MLFLOW_PACKAGES = ("orchestrator.track", "orchestrator.export")


def mlflow_uses(module: str) -> list[tuple[str, int]]:
    """(what, line) wherever a module imports MLflow (lazily too: ``import``, ``importlib.import_module``,
    ``__import__``) or reaches into ``sys.modules`` for it."""
    path = REPO / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(f"import {a.name}", node.lineno) for a in node.names if _is_mlflow(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_mlflow(node.module or ""):
            found.append((f"from {node.module} import ...", node.lineno))
        elif isinstance(node, ast.Call) and _call_name(node.func) in ("import_module", "__import__"):
            if node.args and isinstance(node.args[0], ast.Constant) and _is_mlflow(str(node.args[0].value)):
                found.append((f"{_call_name(node.func)}({node.args[0].value!r})", node.lineno))
        elif isinstance(node, ast.Subscript) and _call_name(node.value) == "modules":
            key = node.slice
            if isinstance(key, ast.Constant) and _is_mlflow(str(key.value)):
                found.append((f"sys.modules[{key.value!r}]", node.lineno))
    return found


def _is_mlflow(name: str) -> bool:
    return name == "mlflow" or name.startswith("mlflow.")


def _call_name(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else ""


def test_only_the_tracker_and_the_exports_import_mlflow():
    """Everything else goes through orchestrator.track: the training loop hands numbers to
    track.pipeline and knows nothing of MLflow."""
    elsewhere = [
        f"{module}:{line} {what}"
        for module in project_modules()
        if not any(module == p or module.startswith(p + ".") for p in MLFLOW_PACKAGES)
        for what, line in mlflow_uses(module)
    ]
    assert not elsewhere, "\n".join(elsewhere)


def test_the_mlflow_rule_sees_lazy_and_indirect_imports(tmp_path, monkeypatch):
    source = (
        "import os\n"
        "def f():\n"
        "    import mlflow.tracking\n"
        "    from mlflow import MlflowClient\n"
        "    importlib.import_module('mlflow.system_metrics')\n"
        "    sys.modules['mlflow'] = None\n"
        "    import mlflowish, json\n"
    )
    (tmp_path / "probe.py").write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert [line for _, line in mlflow_uses("probe")] == [3, 4, 5, 6]
