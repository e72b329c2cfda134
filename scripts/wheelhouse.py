# noqa: INP001 (a script run by path, not an importable package)
"""The image's Python dependencies as a hashed wheelhouse, built with pip on the host.

    .venv/bin/python scripts/wheelhouse.py cpu wheelhouse        # then build the image (Dockerfile)
    TORCH_INDEX_URL=... .venv/bin/python scripts/wheelhouse.py cuda wheelhouse

The Dockerfile installs from this directory only (``pip install --no-index --require-hashes``): no
step of the image build reaches a package index, and every file it installs is one downloaded here,
checked against its SHA-256. What goes in:

- the project, as a wheel built from this checkout;
- its runtime dependencies (``.[kubernetes]``) at the versions of ``constraints.txt`` and, for every
  other package, the version installed in the environment that runs this script (the one the test
  suite ran with), plus setuptools to build the source packages;
- ``requirements.lock``: one ``name==version --hash=sha256:...`` line per wheel;
- ``sdists.lock``: the same for source packages (DeepSpeed), built in the image's build stage against
  the torch installed there, so its CUDA ops are compiled in the build stage and the runtime stage
  needs no compiler.

pip resolves for the machine it runs on, so run it where the image's Python runs: CPython 3.11 on
x86-64 Linux for ``cpu`` (Debian bookworm's), CPython 3.12 for ``cuda`` (Ubuntu 24.04's). torch is
pinned with its build: ``torch==X+cpu`` for ``cpu`` (pip must find it: a local wheelhouse or
``TORCH_INDEX_URL``, PyTorch's CPU wheel index), ``torch==X+cu128`` for ``cuda`` (``TORCH_INDEX_URL``
is PyTorch's wheel index for CUDA 12.8, the toolkit of the Dockerfile's CUDA base images).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# variant: (the image's Python, torch's local version label). The CUDA label and the Dockerfile's
# CUDA_VERSION move together (tests/k8s/test_image.py checks it).
TARGETS = {"cpu": ((3, 11), "cpu"), "cuda": ((3, 12), "cu128")}
_FILE = re.compile(
    r"^(?P<name>[A-Za-z0-9_.]+?)-(?P<version>[0-9][^-]*?)(-[^-]+-[^-]+-[^-]+\.whl|\.tar\.gz|\.zip)$"
)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variant", choices=sorted(TARGETS))
    parser.add_argument("out", type=Path, nargs="?", default=REPO / "wheelhouse")
    args = parser.parse_args(argv)
    python, label = TARGETS[args.variant]
    if sys.version_info[:2] != python:
        raise SystemExit(
            f"the {args.variant} image runs CPython {python[0]}.{python[1]}, this is "
            f"{sys.version_info[0]}.{sys.version_info[1]}: pip resolves for the Python it runs on"
        )
    out: Path = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    index = os.environ.get("TORCH_INDEX_URL")
    with tempfile.TemporaryDirectory() as tmp:
        pins = Path(tmp) / "pins.txt"
        pins.write_text(tested_pins(label))
        pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO))
        project = next(out.glob("gpt_orchestrator-*.whl"))
        pip(
            "download", "-d", str(out), "-c", str(pins), *(["--extra-index-url", index] if index else []),
            f"gpt-orchestrator[kubernetes] @ {project.as_uri()}", "setuptools",
        )  # fmt: skip
    wheels, sources = write_locks(out)
    print(f"wheelhouse {out}: {wheels} wheels, {sources} source packages", file=sys.stderr)
    return 0


def tested_pins(label: str) -> str:
    """constraints.txt with torch's build named, then the version of every other installed package."""
    lines = []
    for line in (REPO / "constraints.txt").read_text().splitlines():
        match = re.match(r"^torch==([0-9.]+)$", line.strip())
        lines.append(f"torch=={match.group(1)}+{label}" if match else line)
    pinned = {re.split(r"[=<>!~ ]", line)[0].lower() for line in lines if line and not line.startswith("#")}
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for line in frozen:
        name, sep, version = line.partition("==")
        if sep and name.lower() not in pinned and "+" not in version:
            lines.append(line)
    return "\n".join(lines) + "\n"


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], check=True)


def write_locks(out: Path) -> tuple[int, int]:
    wheels, sources = [], []
    for path in sorted(out.iterdir()):
        match = _FILE.match(path.name)
        if match is None:
            raise SystemExit(f"{path.name}: not a wheel or source package name pip writes")
        name = re.sub(r"[-_.]+", "-", match["name"]).lower()
        line = f"{name}=={match['version']} --hash=sha256:{sha256(path)}\n"
        (wheels if path.name.endswith(".whl") else sources).append(line)
    (out / "requirements.lock").write_text("".join(wheels))
    (out / "sdists.lock").write_text("".join(sources))
    return len(wheels), len(sources)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
