# syntax=docker/dockerfile:1
# The training image (Ray head, workers and RayJob submitter) and the MLflow server image.
#
#   docker build --build-arg VARIANT=cpu  -t gpt-orchestrator:0.1.0-cpu .
#   docker build --build-arg VARIANT=cuda -t gpt-orchestrator:0.1.0-cuda .
#   docker build --target mlflow-server -t gpt-orchestrator-mlflow:0.1.0 .
#
# First make the wheelhouse the build installs from (the project and its pinned, hashed dependencies;
# no step of the build reaches a package index):
#
#   .venv/bin/python scripts/wheelhouse.py cpu     # or: cuda, on a CPython 3.12 machine
#
# VARIANT=cpu runs on Debian bookworm's Python 3.11 (CPU_BASE); VARIANT=cuda is built on NVIDIA's
# CUDA development image (nvcc compiles DeepSpeed's ops there) and runs on its runtime image, both
# Ubuntu 24.04 with Python 3.12. scripts/image-test.sh builds the CPU variant of this very file on a
# Debian root filesystem made by mmdebstrap, and trains in it (`make image-test`).

ARG VARIANT=cpu
# CPU: Debian bookworm's CPython 3.11. Any bookworm root filesystem with python3, python3-venv and
# passwd serves as well (scripts/image-test.sh builds this file on one that mmdebstrap makes).
ARG CPU_BASE=python:3.11.13-slim-bookworm
# CUDA: the toolkit of these images, torch's CUDA build (torch==X+cu128 in the wheelhouse, see
# scripts/wheelhouse.py) and DeepSpeed's compiled ops must agree: tests/k8s/test_image.py checks it.
ARG CUDA_VERSION=12.8.1
ARG CUDA_BUILD_BASE=nvidia/cuda:${CUDA_VERSION}-cudnn-devel-ubuntu24.04
ARG CUDA_RUNTIME_BASE=nvidia/cuda:${CUDA_VERSION}-cudnn-runtime-ubuntu24.04

# --- bases ---------------------------------------------------------------------------------------
# hadolint ignore=DL3006
FROM ${CPU_BASE} AS build-cpu

# The runtime keeps a C++ compiler for torch.compile (inductor's CPU kernels), nothing else.
# hadolint ignore=DL3006
FROM ${CPU_BASE} AS runtime-cpu
# The base is pinned; its distribution's package versions move with security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*

# nvcc and the CUDA headers: DeepSpeed's ops are compiled here, once.
# hadolint ignore=DL3006
FROM ${CUDA_BUILD_BASE} AS build-cuda
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-dev python3-venv g++ \
    && rm -rf /var/lib/apt/lists/*

# No CUDA development toolkit at run time: the CUDA and cuDNN runtime libraries, Python, and gcc with
# Python's headers for torch.compile (Triton builds a small C launcher at run time).
# hadolint ignore=DL3006
FROM ${CUDA_RUNTIME_BASE} AS runtime-cuda
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-dev gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

# --- build: the project and its dependencies in a virtual environment --------------------------
# Everything comes from the hashed wheelhouse (scripts/wheelhouse.py): no package index is reached
# and every file is checked against the SHA-256 in its lock.
# hadolint ignore=DL3006
FROM build-${VARIANT} AS build
ARG VARIANT
# DeepSpeed's ops for the CUDA image (Ampere, Hopper), compiled against the installed torch.
ARG TORCH_CUDA_ARCH_LIST="8.0;9.0"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INDEX=1 \
    PIP_FIND_LINKS=/wheelhouse
COPY wheelhouse /wheelhouse
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes --no-deps -r /wheelhouse/requirements.lock \
    && if [ "$VARIANT" = cuda ]; then export DS_BUILD_CPU_ADAM=1 DS_BUILD_FUSED_ADAM=1 \
        DS_BUILD_UTILS=1 TORCH_CUDA_ARCH_LIST="$TORCH_CUDA_ARCH_LIST"; fi \
    && /opt/venv/bin/pip install --require-hashes --no-deps --no-build-isolation --use-pep517 \
        -r /wheelhouse/sdists.lock \
    && /opt/venv/bin/pip check

# --- the training image ------------------------------------------------------------------------
# hadolint ignore=DL3006
FROM runtime-${VARIANT} AS training
COPY --from=build /opt/venv /opt/venv
# KubeRay starts Ray through a login shell (bash -l), whose /etc/profile resets PATH: put the
# environment back on it there too ($PATH is meant literally). Ubuntu 24.04's images already have a
# user 1000 (ubuntu): it makes way for the image's own.
# hadolint ignore=SC2016
RUN echo 'export PATH=/opt/venv/bin:$PATH' > /etc/profile.d/gpt-orchestrator.sh \
    && taken="$(getent passwd 1000 || true)" \
    && if [ -n "$taken" ]; then userdel --remove "${taken%%:*}" 2>/dev/null || userdel "${taken%%:*}"; fi \
    && group="$(getent group 1000 || true)" \
    && if [ -n "$group" ]; then groupdel "${group%%:*}"; fi \
    && groupadd --gid 1000 app \
    && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true
USER 1000:1000
WORKDIR /home/app
# The worker side of a run: the driver that KubeRay's submitter starts reads the run ticket
# (KubeRay replaces this command with `ray start` in the head and worker containers).
ENTRYPOINT ["python", "-m", "launchers.job_entry"]
CMD ["/etc/orchestrator/run.json"]

# --- the MLflow tracking server ----------------------------------------------------------------
FROM python:3.11-slim-bookworm AS mlflow-server
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir \
        "mlflow[auth]==3.17.2" "psycopg2-binary==2.9.13" "boto3>=1.28,<2" \
    && groupadd --gid 1000 mlflow \
    && useradd --uid 1000 --gid 1000 --create-home mlflow
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true
USER 1000:1000
WORKDIR /home/mlflow
EXPOSE 5000
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]

# The default target: the training image of VARIANT.
FROM training
