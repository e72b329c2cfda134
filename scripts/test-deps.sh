#!/usr/bin/env bash
# System packages the test suite needs: PostgreSQL (backend store of the tracking-server tests) and
# Chromium (the MLflow UI browser test). Idempotent: installs only what is missing, so a machine that
# already has both pays nothing. Run by `make test-deps`, which `make test` depends on.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "test-deps: installing ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
        echo "test-deps: need root (or sudo) to apt-get install ${missing[*]}" >&2
        exit 1
    }
    sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
