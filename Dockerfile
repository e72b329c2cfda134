# syntax=docker/dockerfile:1
# The training image (Ray head, workers and RayJob submitter) and the MLflow server image.
#
#   docker build --build-arg VARIANT=cpu  -t gpt-orchestrator:0.1.0-cpu .
#   docker build --build-arg VARIANT=cuda -t gpt-orchestrator:0.1.0-cuda .
#   docker build --target mlflow-server -t gpt-orchestrator-mlflow:0.1.0 .
#
# VARIANT=cpu is Debian's slim Python 3.11; VARIANT=cuda is NVIDIA's CUDA development image (nvcc, so
# DeepSpeed can build its CUDA ops at run time) with Ubuntu 24.04's Python 3.12. Both install the
# project with constraints.txt. Its torch pin is the CPU build's and applies to the CPU variant only:
# pass PyTorch's CPU wheel index as TORCH_INDEX_URL there; for the CUDA variant pass PyTorch's index
# for the base image's CUDA (cu128 by default), and the newest torch it offers is installed.

ARG VARIANT=cpu
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04

# --- bases: an interpreter, a C++ compiler (DeepSpeed builds its ops on first use), bash -------
FROM python:3.11-slim-bookworm AS base-cpu
# The base image is pinned; its distribution's package versions move with security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*

FROM ${CUDA_IMAGE} AS base-cuda
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-dev python3-venv g++ \
    && rm -rf /var/lib/apt/lists/*

# --- build: the project and its dependencies in a virtual environment --------------------------
# hadolint ignore=DL3006
FROM base-${VARIANT} AS build
ARG VARIANT
ARG TORCH_INDEX_URL=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_EXTRA_INDEX_URL=${TORCH_INDEX_URL}
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY orchestrator ./orchestrator
COPY launchers ./launchers
RUN if [ "$VARIANT" = cuda ]; then sed -i '/^torch==/d' constraints.txt; fi \
    && pip install --no-cache-dir -c constraints.txt ".[kubernetes]"

# --- the training image ------------------------------------------------------------------------
# hadolint ignore=DL3006
FROM base-${VARIANT} AS training
COPY --from=build /opt/venv /opt/venv
# KubeRay starts Ray through a login shell (bash -l), whose /etc/profile resets PATH: put the
# environment back on it there too ($PATH is meant literally).
# hadolint ignore=SC2016
RUN echo 'export PATH=/opt/venv/bin:$PATH' > /etc/profile.d/gpt-orchestrator.sh \
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
