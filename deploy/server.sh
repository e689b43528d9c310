#!/usr/bin/env bash
# The team tracking server without containers, on one Debian/Ubuntu machine: PostgreSQL 15 as the
# backend store, artifacts proxied by the server to a folder (or to S3: ARTIFACTS=s3://bucket/path
# with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and, for MinIO, MLFLOW_S3_ENDPOINT_URL set).
#
#   sudo MLFLOW_DB_PASSWORD=... deploy/server.sh setup     # once: install PostgreSQL, create role and database
#   MLFLOW_DB_PASSWORD=... deploy/server.sh start          # the server (foreground; run it under systemd)
#
# The password is read from the environment and written only to ~/.pgpass (mode 0600) of the user
# that starts the server; no URI, config or log carries it.
set -euo pipefail
DB_HOST=${DB_HOST:-127.0.0.1}
DB_PORT=${DB_PORT:-5432}
DB_NAME=${DB_NAME:-mlflow}
DB_USER=${DB_USER:-mlflow}
ARTIFACTS=${ARTIFACTS:-/srv/mlflow/artifacts}
HOST=${HOST:-0.0.0.0}
PORT=${PORT:-5000}
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD in the environment}"

case "${1:-}" in
  setup)
    command -v pg_lsclusters >/dev/null || { apt-get update -qq && apt-get install -y -qq postgresql; }
    service postgresql start
    runuser -u postgres -- psql -v ON_ERROR_STOP=1 -v user="$DB_USER" -v db="$DB_NAME" -v pw="$MLFLOW_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'user', :'pw') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user')\gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\gexec
SQL
    mkdir -p "$ARTIFACTS"
    echo "PostgreSQL role $DB_USER and database $DB_NAME ready; artifacts in $ARTIFACTS"
    ;;
  start)
    umask 077
    touch ~/.pgpass
    grep -v "^$DB_HOST:$DB_PORT:$DB_NAME:$DB_USER:" ~/.pgpass > ~/.pgpass.new || true
    echo "$DB_HOST:$DB_PORT:$DB_NAME:$DB_USER:$MLFLOW_DB_PASSWORD" >> ~/.pgpass.new
    mv ~/.pgpass.new ~/.pgpass
    unset MLFLOW_DB_PASSWORD
    exec mlflow server --backend-store-uri "postgresql://$DB_USER@$DB_HOST:$DB_PORT/$DB_NAME" \
      --artifacts-destination "$ARTIFACTS" --host "$HOST" --port "$PORT" --workers "${WORKERS:-4}" \
      ${ALLOWED_HOSTS:+--allowed-hosts "$ALLOWED_HOSTS"}
    ;;
  *)
    echo "usage: MLFLOW_DB_PASSWORD=... $0 setup|start" >&2
    exit 2
    ;;
esac
