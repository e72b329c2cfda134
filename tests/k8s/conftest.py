"""Shared fixtures of the Kubernetes tests: the overlays built by the real `kubectl kustomize`, and
the RayJob rendered from every shipped spec with the backend switched to kubernetes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from launchers.kubernetes.render import RunIdentity, render_job
from orchestrator.spec import load_spec
from tests.conftest import REPO

OVERLAYS = {"dev": REPO / "k8s" / "overlays" / "dev", "prod": REPO / "k8s" / "overlays" / "prod"}
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
RUN_ID = "9f1c0a2b3d4e5f60718293a4b5c6d7e8"


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not on PATH (it builds the kustomize overlays)")
    return path


def build(directory: Path) -> str:
    done = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="session")
def k8s_tree(tmp_path_factory) -> Path:
    """A copy of k8s/ with the dev overlay's credentials made as a user makes them
    (scripts/k8s-dev-secrets.sh): the checkout holds none."""
    tree = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(REPO / "k8s", tree, ignore=shutil.ignore_patterns("secrets"))
    subprocess.run(
        ["bash", str(REPO / "scripts" / "k8s-dev-secrets.sh"), str(tree)], check=True, capture_output=True
    )
    return tree


@pytest.fixture(scope="session")
def built_overlays(k8s_tree) -> dict[str, list[dict]]:
    """overlay name -> the objects `kubectl kustomize` builds from it."""
    return {
        name: list(yaml.safe_load_all(build(k8s_tree / path.relative_to(REPO / "k8s"))))
        for name, path in OVERLAYS.items()
    }


def render_config(path: Path, *overrides: str):
    spec = load_spec(path, ["cluster.backend=kubernetes", "cluster.address=null", *overrides])
    run = RunIdentity(RUN_ID, f"{spec.name}-20250101-120000", path.read_text())
    return spec, render_job(spec, run, strict=False)  # a preview, as `k8s render` shows it


@pytest.fixture(scope="session")
def rendered_configs():
    """config file name -> (spec, RenderedJob) for every spec in configs/."""
    return {path.name: render_config(path) for path in CONFIGS}
