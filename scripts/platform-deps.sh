#!/usr/bin/env bash
# Dependencies of examples/platform.yaml on this host: start PostgreSQL and Redis when they are
# not running, create the platform's database with a generated password, write the secrets
# (database URL, admin token) into .skylift/platform-secrets (0700/0600) and migrate.
# Safe to run again. Ports: SKYLIFT_PLATFORM_PGPORT (5432), SKYLIFT_PLATFORM_REDIS_PORT (6379).
set -euo pipefail
cd "$(dirname "$0")/.."
PGPORT=${SKYLIFT_PLATFORM_PGPORT:-5432}
REDIS_PORT=${SKYLIFT_PLATFORM_REDIS_PORT:-6379}
SECRETS=.skylift/platform-secrets
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }
wait_until() {  # wait_until WHAT COMMAND...: poll with a 30 s deadline
  local what=$1; shift
  for _ in $(seq 1 150); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "platform-deps: $what did not come up within 30 s" >&2; return 1
}

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  echo "platform-deps: installing with apt: ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! pg_isready -q -h 127.0.0.1 -p "$PGPORT"; then
  cluster=$(pg_lsclusters -h | awk -v p="$PGPORT" '$3 == p {print $1 " " $2; exit}')
  if [ -z "$cluster" ]; then
    echo "platform-deps: no PostgreSQL cluster on port $PGPORT; create one with" \
         "'pg_createcluster --port $PGPORT 15 platform'" >&2
    exit 1
  fi
  echo "platform-deps: starting PostgreSQL cluster $cluster" >&2
  # shellcheck disable=SC2086  # "VERSION NAME" splits into two arguments on purpose
  $SUDO pg_ctlcluster $cluster start
  wait_until "PostgreSQL on port $PGPORT" pg_isready -q -h 127.0.0.1 -p "$PGPORT"
fi

mkdir -p "$SECRETS" && chmod 0700 "$SECRETS"
umask 077
if [ ! -s "$SECRETS/database-url" ]; then
  password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
  # the password goes through stdin, never a command line (visible in ps)
  as_postgres psql -q -p "$PGPORT" -v ON_ERROR_STOP=1 -v pw="$password" >/dev/null <<'SQL'
SELECT format('CREATE ROLE skylift_platform LOGIN PASSWORD %L', :'pw')
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'skylift_platform') \gexec
SELECT format('ALTER ROLE skylift_platform PASSWORD %L', :'pw') \gexec
SELECT 'CREATE DATABASE skylift_platform OWNER skylift_platform'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'skylift_platform') \gexec
SQL
  echo "postgresql://skylift_platform:${password}@127.0.0.1:${PGPORT}/skylift_platform" \
    > "$SECRETS/database-url"
fi
[ -s "$SECRETS/admin-token" ] || python3 -c 'import secrets; print(secrets.token_urlsafe(32))' \
  > "$SECRETS/admin-token"

if ! redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  echo "platform-deps: starting redis-server on 127.0.0.1:$REDIS_PORT" >&2
  mkdir -p .skylift/platform-redis
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$PWD/.skylift/platform-redis" \
    --appendonly yes --save "" --daemonize yes --logfile "$PWD/.skylift/platform-redis/redis.log"
  wait_until "Redis on port $REDIS_PORT" redis-cli -p "$REDIS_PORT" ping
fi

SKYLIFT_PLATFORM_DATABASE_URL_FILE="$SECRETS/database-url" .venv/bin/python -m skylift platform migrate
echo "platform-deps: PostgreSQL on $PGPORT and Redis on $REDIS_PORT are up; secrets in $SECRETS" >&2
