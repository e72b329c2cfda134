#!/usr/bin/env bash
# Build the CPU training image from the project's Dockerfile without a container daemon or a
# registry, then run `orchestrator validate` and a 10-step training in it as its non-root user.
#
#   bash scripts/image-test.sh            # `make image-test`; about 10 minutes on 2 cores
#
# 1. mmdebstrap makes a Debian bookworm root filesystem from Debian's archive (python3, python3-venv,
#    passwd) with a user of uid 1000, as Ubuntu 24.04's images have, so that the Dockerfile's user
#    step meets the case that once broke the CUDA image;
# 2. buildah imports it as the base image and builds the Dockerfile with VARIANT=cpu and that base
#    (CPU_BASE), chroot isolation and vfs storage (no daemon, no privileges beyond root);
# 3. the Python dependencies come from a hashed wheelhouse made on this machine with pip
#    (scripts/wheelhouse.py); the build installs it with --no-index --require-hashes;
# 4. in a container of the image, as uid 1000: `orchestrator validate` of the quickstart spec and a
#    10-step training run of it (embedded Ray, 2 workers).
# Installs buildah and mmdebstrap with apt when missing. WORK (default build/image-test) holds the
# root filesystem, the wheelhouse and buildah's storage; it is removed at the end unless KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-build/image-test}
PYTHON=${PYTHON:-.venv/bin/python}
TAG=localhost/gpt-orchestrator:image-test
BASE=localhost/gpt-orchestrator-test-base:bookworm
SUITE=${SUITE:-bookworm}

missing=()
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
if [ ${#missing[@]} -gt 0 ]; then
    echo "image-test: installing ${missing[*]}"
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
STORE=(--root "$WORK/storage" --runroot "$WORK/run" --storage-driver vfs)
cleanup() {
    buildah "${STORE[@]}" rm --all >/dev/null 2>&1 || true
    if [ "${KEEP:-0}" != 1 ]; then
        buildah "${STORE[@]}" rmi --all --force >/dev/null 2>&1 || true
        rm -rf "$WORK" wheelhouse
    fi
}
trap cleanup EXIT
started=$SECONDS
step() { echo "image-test: [$((SECONDS - started)) s] $*"; }

step "root filesystem: Debian $SUITE minbase with a uid-1000 user"
rm -f "$WORK/rootfs.tar"
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,passwd,ca-certificates \
    --customize-hook='chroot "$1" useradd --uid 1000 --user-group --create-home --shell /bin/bash ubuntu' \
    "$SUITE" "$WORK/rootfs.tar"
mkdir -p "$WORK/base"
mv "$WORK/rootfs.tar" "$WORK/base/rootfs.tar"
printf 'FROM scratch\nADD rootfs.tar /\nCMD ["/bin/bash"]\n' >"$WORK/base/Containerfile"
buildah "${STORE[@]}" bud --quiet --isolation chroot -t "$BASE" "$WORK/base" >/dev/null
rm -f "$WORK/base/rootfs.tar"

step "wheelhouse: the project and its dependencies, hashed"
"$PYTHON" scripts/wheelhouse.py cpu wheelhouse

step "image: the Dockerfile, VARIANT=cpu on that base"
buildah "${STORE[@]}" bud --isolation chroot --layers=false \
    --build-arg VARIANT=cpu --build-arg CPU_BASE="$BASE" -t "$TAG" -f Dockerfile .
built=$SECONDS
size=$(buildah "${STORE[@]}" inspect --type image --format '{{.ImageSize}}' "$TAG" 2>/dev/null || true)
[ -n "$size" ] || size=$(buildah "${STORE[@]}" images --format '{{.Size}}' "$TAG")
step "image built in $((built - started)) s, size $size"

step "in the image, as uid 1000: orchestrator validate and a 10-step training"
ctr=$(buildah "${STORE[@]}" from "$TAG")
user=$(buildah "${STORE[@]}" inspect --format '{{.OCIv1.Config.User}}' "$ctr")
[ "$user" = "1000:1000" ] || { echo "image-test: the image's user is '$user', not 1000:1000" >&2; exit 1; }
run() { buildah "${STORE[@]}" run --isolation chroot --user 1000:1000 --workingdir /home/app "$ctr" -- "$@"; }
run sh -c 'test "$(id -u):$(id -g)" = 1000:1000 && test "$(id -un)" = app && test ! -w /opt/venv'
run sh -c 'command -v nvcc >/dev/null && exit 1 || true'
buildah "${STORE[@]}" copy --chown 1000:1000 "$ctr" configs/quickstart.yaml /home/app/quickstart.yaml >/dev/null
run orchestrator validate quickstart.yaml
run orchestrator submit quickstart.yaml --set train.max_steps=10 --set schedule.warmup_steps=2 \
    --set train.epochs=1 --set train.eval_interval=5 --set train.log_interval=5 \
    --set checkpoint.dir=/home/app/checkpoints \
    --set tracking.uri=sqlite:////home/app/mlflow.db
run sh -c 'ls -d /home/app/checkpoints/*/step-10 >/dev/null'
step "done: built in $((built - started)) s, $size; validate and 10 steps of training passed"
