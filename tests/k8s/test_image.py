"""What can be read from the Dockerfile without building it: hadolint, the stages, the user, torch's
CUDA build against the base images' toolkit, the hashed wheelhouse, against the README, the renderer
and the manifests. The CPU image is built and trained in by `make image-test` (scripts/image-test.sh),
a CI step of its own; the CUDA image's bases cannot be pulled here."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from launchers.kubernetes import render
from orchestrator import __version__
from tests.conftest import REPO

DOCKERFILE = REPO / "Dockerfile"
INSTALL = "pip install --require-hashes --no-deps -r /wheelhouse/requirements.lock"


def stages() -> dict[str, list[tuple[str, str]]]:
    """stage name -> its (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    result: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction == "FROM":
            current = arguments.split(" AS ")[-1] if " AS " in arguments else f"final:{arguments}"
            result[current] = []
        if current is not None:
            result[current].append((instruction, arguments))
    return result


def instruction(stage: str, name: str) -> list[str]:
    return [args for inst, args in stages()[stage] if inst == name]


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_installs_the_project_as_the_readme_says():
    runs = " ".join(instruction("build", "RUN"))
    assert INSTALL in runs
    for readme in (REPO / "k8s" / "README.md", REPO / "README.md"):
        assert "scripts/wheelhouse.py" in readme.read_text(), readme
    # the CPU variant's torch is constraints.txt's pin, with its build named
    assert re.search(r"^torch==\S+$", (REPO / "constraints.txt").read_text(), re.M)
    assert stages()["build-cpu"] and stages()["build-cuda"] and "ARG VARIANT=cpu" in DOCKERFILE.read_text()


def test_the_build_context_is_the_wheelhouse_which_holds_the_project():
    """The project reaches the image as a wheel of the checkout (every package pyproject ships), so
    nothing else of the checkout is in the build context."""
    assert (REPO / ".dockerignore").read_text().split("\n")[-3:] == ["*", "!wheelhouse", ""]
    script = (REPO / "scripts" / "wheelhouse.py").read_text()
    assert '"wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO)' in script
    assert "gpt-orchestrator[kubernetes]" in script


def test_the_entrypoint_is_the_one_the_rayjob_runs():
    entrypoint = json.loads(instruction("training", "ENTRYPOINT")[0])
    command = json.loads(instruction("training", "CMD")[0])
    assert " ".join(entrypoint + command) == render.ENTRYPOINT
    module = entrypoint[-1]
    assert module.split(".")[0] in {"orchestrator", "launchers"}  # shipped by the COPY lines above


def test_both_images_run_as_the_uid_the_manifests_use():
    for stage in ("training", "mlflow-server"):
        assert instruction(stage, "USER") == [f"{render.RUN_AS}:{render.RUN_AS}"], stage
    assert render.POD_SECURITY["runAsUser"] == render.RUN_AS
    for manifest in ("tracking/mlflow.yaml", "training/raycluster.yaml"):
        docs = yaml.safe_load_all((REPO / "k8s" / "base" / manifest).read_text())
        users = {
            json.dumps(d).count(f'"runAsUser": {render.RUN_AS}')
            for d in docs
            if d["kind"] not in ("Service", "ServiceAccount")
        }
        assert 0 not in users, manifest


def test_ray_finds_the_environment_in_a_login_shell():
    """KubeRay runs `bash -lc`, and /etc/profile resets PATH: a profile.d script puts the venv back."""
    runs = " ".join(instruction("training", "RUN"))
    assert "echo 'export PATH=/opt/venv/bin:$PATH' > /etc/profile.d/" in runs
    assert any(env.startswith("PATH=/opt/venv/bin:$PATH") for env in instruction("training", "ENV"))


def test_the_tags_the_readme_builds_are_the_ones_used():
    text = DOCKERFILE.read_text()
    for tag in (
        f"gpt-orchestrator:{__version__}-cpu",
        f"gpt-orchestrator:{__version__}-cuda",
        f"gpt-orchestrator-mlflow:{__version__}",
    ):
        assert f"-t {tag} ." in text, tag
    dev = REPO / "k8s" / "overlays" / "dev"
    tags = {}
    for part in ("training", "tracking"):
        tags |= {
            i["name"]: i["newTag"]
            for i in yaml.safe_load((dev / part / "kustomization.yaml").read_text())["images"]
        }
    assert tags == {"gpt-orchestrator": f"{__version__}-cpu", "gpt-orchestrator-mlflow": __version__}


@pytest.mark.parametrize("package", ["mlflow", "psycopg2-binary"])
def test_the_tracking_server_image_runs_the_versions_the_project_is_tested_with(package):
    pins = " ".join(instruction("mlflow-server", "RUN"))
    assert re.search(rf'"{re.escape(package)}(\[auth\])?=={re.escape(version(package))}"', pins), package


# --- what can be read without building: the stages, the user, torch's CUDA build -----------------


def arg_default(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert match, f"ARG {name} has no default"
    return match.group(1).strip('"')


def test_torch_and_its_cuda_build_are_pinned_together_with_the_base_images_toolkit():
    """The CUDA image's torch is torch==<constraints' version>+cuXY, XY the toolkit of the CUDA base
    images (DeepSpeed's compiled ops refuse a torch built for another CUDA)."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import wheelhouse
    finally:
        sys.path.pop(0)
    (python, label) = wheelhouse.TARGETS["cuda"]
    major, minor = arg_default("CUDA_VERSION").split(".")[:2]
    assert label == f"cu{major}{minor}"
    assert wheelhouse.tested_pins(label).splitlines()[1] == f"torch=={version('torch').split('+')[0]}+{label}"
    for base in ("CUDA_BUILD_BASE", "CUDA_RUNTIME_BASE"):
        assert arg_default(base).startswith("nvidia/cuda:${CUDA_VERSION}-"), base
    assert python == (3, 12)  # Ubuntu 24.04's, the CUDA images' distribution
    assert wheelhouse.TARGETS["cpu"] == ((3, 11), "cpu")  # Debian bookworm's


def test_the_build_installs_only_from_the_hashed_wheelhouse():
    text = DOCKERFILE.read_text()
    assert "TORCH_INDEX_URL" not in text and "EXTRA_INDEX" not in text
    runs = " ".join(instruction("build", "RUN"))
    envs = " ".join(instruction("build", "ENV"))
    assert "PIP_NO_INDEX=1" in envs
    for lock in ("requirements.lock", "sdists.lock"):
        assert "--require-hashes --no-deps" in runs and f"-r /wheelhouse/{lock}" in runs, lock
    assert "pip check" in runs
    assert instruction("build", "COPY") == ["wheelhouse /wheelhouse"]


def test_the_cuda_toolkit_stays_in_the_build_stage():
    assert "devel" in arg_default("CUDA_BUILD_BASE") and "devel" not in arg_default("CUDA_RUNTIME_BASE")
    assert stages()["build-cuda"][0] == ("FROM", "${CUDA_BUILD_BASE} AS build-cuda")
    assert stages()["runtime-cuda"][0] == ("FROM", "${CUDA_RUNTIME_BASE} AS runtime-cuda")
    assert stages()["training"][0] == ("FROM", "runtime-${VARIANT} AS training")
    assert instruction("training", "COPY") == ["--from=build /opt/venv /opt/venv"]  # the venv alone
    runtime = " ".join(instruction("runtime-cuda", "RUN"))
    assert "cuda-toolkit" not in runtime and "nvcc" not in runtime and "g++" not in runtime
    # DeepSpeed's CUDA ops are compiled in the build stage, against the installed torch
    assert "DS_BUILD_CPU_ADAM=1" in " ".join(instruction("build", "RUN"))


def test_the_user_step_makes_way_for_a_user_1000_the_base_already_has():
    """Ubuntu 24.04's images have user `ubuntu` with uid 1000: a plain useradd --uid 1000 fails there.
    (scripts/image-test.sh builds on a base with such a user, so the image build shows it.)"""
    runs = " ".join(instruction("training", "RUN"))
    first_useradd = runs.index("useradd --uid 1000")
    assert runs.index("getent passwd 1000") < runs.index("userdel") < first_useradd
    assert runs.index("groupdel") < runs.index("groupadd --gid 1000")
    script = (REPO / "scripts" / "image-test.sh").read_text()
    assert "useradd --uid 1000" in script and "--build-arg CPU_BASE=" in script


def test_the_image_test_is_its_own_ci_step_after_make_test():
    steps = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert steps.index("make test") < steps.index("make image-test")
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^image-test: \$\(STAMP\)\n\tbash scripts/image-test.sh$", makefile, re.M)
