#!/usr/bin/env bash
# Starts the MLflow tracking server with authentication on. The admin password comes
# from the environment (MLflow refuses to start without one); the auth config is written
# privately at start from the environment.
set -euo pipefail
: "${MLFLOW_ADMIN_PASSWORD:?set MLFLOW_ADMIN_PASSWORD}"
: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI}"
: "${MLFLOW_AUTH_DATABASE_URI:?set MLFLOW_AUTH_DATABASE_URI}"
conf="$(mktemp -d)/basic_auth.ini"
umask 077
cat > "$conf" <<INI
[mlflow]
default_permission = READ
database_uri = ${MLFLOW_AUTH_DATABASE_URI}
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
export MLFLOW_AUTH_CONFIG_PATH="$conf"
export MLFLOW_AUTH_ADMIN_PASSWORD="$MLFLOW_ADMIN_PASSWORD"
exec mlflow server --app-name basic-auth \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-/shared/mlartifacts}" \
  --serve-artifacts --host 0.0.0.0 --port "${MLFLOW_PORT:-5000}" "$@"
