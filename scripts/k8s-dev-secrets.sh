#!/usr/bin/env bash
# Random credentials for the dev overlay, written where its secretGenerators read them (git ignores
# them): k8s/overlays/dev/{training,tracking}/secrets/. Existing files are kept, so the credentials
# stay those of the running cluster; delete them to make new ones.
#
#   bash scripts/k8s-dev-secrets.sh [K8S_DIR]      # default: k8s (of this checkout)
set -euo pipefail
k8s=${1:-"$(dirname "$0")/../k8s"}
training="$k8s/overlays/dev/training/secrets"
tracking="$k8s/overlays/dev/tracking/secrets"
mkdir -p "$training" "$tracking"
umask 077
token() { python3 -c "import secrets; print(secrets.token_urlsafe(${1:-32}))"; }
key() { python3 -c "import secrets; print(secrets.token_hex(10))"; }
write() { # file, content: written once
    [ -e "$1" ] || printf '%s\n' "$2" >"$1"
}
get() { sed -n "s/^$2=//p" "$1"; }

write "$tracking/mlflow-db.env" "postgres-password=$(token)"
db=$(get "$tracking/mlflow-db.env" postgres-password)
uri="postgresql+psycopg2://mlflow:$db@postgres:5432/mlflow"
grep -q '^backend-store-uri=' "$tracking/mlflow-db.env" || echo "backend-store-uri=$uri" >>"$tracking/mlflow-db.env"
write "$tracking/basic_auth.ini" "[mlflow]
default_permission = READ
database_uri = $uri
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth"
write "$tracking/mlflow-auth.env" "admin-password=$(token)
flask-secret-key=$(token)"
# The training pods log to MLflow as its admin in dev (a user of their own elsewhere: k8s/README.md).
admin=$(get "$tracking/mlflow-auth.env" admin-password)
write "$training/mlflow-client.env" "username=admin
password=$admin"
# Three S3 identities of SeaweedFS, each scoped: MLflow's artifacts, the runs' bucket, the bucket Job.
write "$tracking/mlflow-artifacts.env" "AWS_ACCESS_KEY_ID=mlflow-$(key)
AWS_SECRET_ACCESS_KEY=$(token)"
write "$training/object-store.env" "AWS_ACCESS_KEY_ID=training-$(key)
AWS_SECRET_ACCESS_KEY=$(token)
AWS_ENDPOINT_URL=http://seaweedfs.gpt-orchestrator-tracking.svc.cluster.local:8333
AWS_REGION=us-east-1"
write "$tracking/s3-admin.env" "AWS_ACCESS_KEY_ID=admin-$(key)
AWS_SECRET_ACCESS_KEY=$(token)"
if [ ! -e "$tracking/s3.json" ]; then
    python3 - "$tracking" "$training" <<'PY'
import json, sys
from pathlib import Path

tracking, training = map(Path, sys.argv[1:])
def keys(path):
    pairs = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return [{"accessKey": pairs["AWS_ACCESS_KEY_ID"], "secretKey": pairs["AWS_SECRET_ACCESS_KEY"]}]
def scoped(bucket):
    return [f"{action}:{bucket}" for action in ("Read", "Write", "List", "Tagging")]
identities = [
    {"name": "mlflow", "credentials": keys(tracking / "mlflow-artifacts.env"), "actions": scoped("mlflow-artifacts")},
    {"name": "training", "credentials": keys(training / "object-store.env"), "actions": scoped("gpt-orchestrator")},
    {"name": "buckets", "credentials": keys(tracking / "s3-admin.env"), "actions": ["Admin"]},
]
(tracking / "s3.json").write_text(json.dumps({"identities": identities}, indent=2) + "\n")
PY
fi
echo "k8s-dev-secrets: credentials in $training and $tracking"
