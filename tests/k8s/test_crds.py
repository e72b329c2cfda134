"""The vendored KubeRay CRDs are the unchanged v1.7.0 files their README names."""

from __future__ import annotations

import hashlib
import re

from launchers.kubernetes.validate import CRD_DIR, CRD_FILES, KUBERAY_VERSION, crd_available
from tests.conftest import REPO

SHA256 = {
    "ray.io_rayjobs.yaml": "01a5cf3b17c1769fda44af7e82debcd98722f0c27b9ab84d084681c6649121f5",
    "ray.io_rayclusters.yaml": "c44704442eef0c6721ad40c1d66782c8bd3fdab9d3344306a5820910a679baa1",
    "ray.io_rayservices.yaml": "0a8fc325e6e22b9231c1f282b309555e2ecf94227ca20a03df3d1d9a403907ab",
}


def test_the_crds_are_the_released_bytes():
    assert crd_available() and set(CRD_FILES.values()) == set(SHA256)
    for name, digest in SHA256.items():
        assert hashlib.sha256((CRD_DIR / name).read_bytes()).hexdigest() == digest, name


def test_the_readme_names_source_tag_license_and_digests():
    readme = (CRD_DIR / "README.md").read_text()
    assert KUBERAY_VERSION == "v1.7.0" and "tag `v1.7.0`" in readme and "Apache-2.0" in readme
    assert "github.com/ray-project/kuberay" in readme
    for name, digest in SHA256.items():
        assert re.search(rf"`{re.escape(name)}` \| `{digest}`", readme), name


def test_no_overlay_installs_the_crds():
    """The operator's Helm chart installs them; the overlays must not (they would fight over them)."""
    for kustomization in (REPO / "k8s").rglob("kustomization.yaml"):
        assert "crds" not in kustomization.read_text(), kustomization
