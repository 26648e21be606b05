#!/usr/bin/env bash
# What examples/regions.yaml needs on one host, started idempotently:
#   - a PostgreSQL cluster per region on 127.0.0.1:5501-5504 (db `platform`, user `skylift`,
#     trust on loopback only), wal_level=replica so a standby can stream from it;
#   - eu-west's in-zone streaming standby on 5512 (pg_basebackup -R from 5502), the copy
#     eu-central holds;
#   - a Redis per region on 127.0.0.1:6501-6504 (no persistence: sessions and counters).
# State (data dirs, sockets, logs) lives under .skylift/regions-deps (REGIONS_DEPS_DIR).
#
#   scripts/regions-deps.sh          # start what is not running (safe to run again)
#   scripts/regions-deps.sh status   # what runs
#   scripts/regions-deps.sh stop     # stop everything it started (data is kept)
#   scripts/regions-deps.sh reset    # stop and delete the data (a fresh standby next start)
#
# As root, PostgreSQL runs as the `postgres` user (it refuses root).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${REGIONS_DEPS_DIR:-$ROOT/.skylift/regions-deps}"
REGIONS=(us eu-west eu-central asia)
PG_PORTS=(5501 5502 5503 5504)
REDIS_PORTS=(6501 6502 6503 6504)
STANDBY_PORT=5512
STANDBY_OF=eu-west
STANDBY_FROM=5502

pg_bin() {
  if [[ -n "${SKYLIFT_PG_BIN:-}" ]]; then echo "$SKYLIFT_PG_BIN"; return; fi
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
  if [[ -z "$dir" ]]; then dir="$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")"; fi
  if [[ ! -x "$dir/initdb" ]]; then
    echo "error: PostgreSQL server binaries not found (install postgresql or set SKYLIFT_PG_BIN)" >&2
    exit 1
  fi
  echo "$dir"
}

as_pg() {  # run a PostgreSQL binary as a user it accepts
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

own_dir() {
  mkdir -p "$1"
  chmod 700 "$1"
  if [[ "$(id -u)" == 0 ]]; then chown postgres:postgres "$1"; fi
}

pg_running() { as_pg "$BIN/pg_ctl" status -D "$1" >/dev/null 2>&1; }

pg_start() {  # data dir, port, name
  local data="$1" port="$2" name="$3"
  if pg_running "$data"; then
    echo "postgres $name: running on 127.0.0.1:$port"
    return
  fi
  as_pg "$BIN/pg_ctl" start -D "$data" -w -t 60 -l "$STATE/log/postgres-$name.log" \
    -o "-p $port -k $STATE/run -c listen_addresses=127.0.0.1 -c wal_level=replica -c max_wal_senders=5 -c hot_standby=on" >/dev/null
  echo "postgres $name: started on 127.0.0.1:$port"
}

psql_q() {  # port, sql
  as_pg "$BIN/psql" -h 127.0.0.1 -p "$1" -U skylift -d postgres -Atqc "$2"
}

start_all() {
  mkdir -p "$STATE"
  if [[ "$(id -u)" == 0 ]]; then chmod 755 "$STATE"; fi
  own_dir "$STATE/run"
  own_dir "$STATE/log"
  own_dir "$STATE/pg"
  local i name port data
  for i in "${!REGIONS[@]}"; do
    name="${REGIONS[$i]}" port="${PG_PORTS[$i]}" data="$STATE/pg/$name"
    if [[ ! -f "$data/PG_VERSION" ]]; then
      as_pg "$BIN/initdb" -D "$data" -U skylift -A trust -E UTF8 --locale=C --no-sync >/dev/null
      printf 'local all all trust\nhost all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n' \
        | as_pg tee "$data/pg_hba.conf" >/dev/null
    fi
    pg_start "$data" "$port" "$name"
    if [[ "$(psql_q "$port" "SELECT 1 FROM pg_database WHERE datname = 'platform'")" != 1 ]]; then
      psql_q "$port" "CREATE DATABASE platform" >/dev/null
    fi
  done
  data="$STATE/pg/$STANDBY_OF-standby"
  if [[ ! -f "$data/PG_VERSION" ]]; then
    as_pg "$BIN/pg_basebackup" -h 127.0.0.1 -p "$STANDBY_FROM" -U skylift -D "$data" -R -X stream >/dev/null
  fi
  pg_start "$data" "$STANDBY_PORT" "$STANDBY_OF-standby"
  own_dir "$STATE/redis"
  for i in "${!REGIONS[@]}"; do
    name="${REGIONS[$i]}" port="${REDIS_PORTS[$i]}"
    if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
      echo "redis $name: running on 127.0.0.1:$port"
      continue
    fi
    mkdir -p "$STATE/redis/$name"
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --save "" --appendonly no \
      --dir "$STATE/redis/$name" --pidfile "$STATE/redis/$name.pid" \
      --logfile "$STATE/log/redis-$name.log" >/dev/null
    for _ in $(seq 50); do
      redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && break
      sleep 0.1
    done
    echo "redis $name: started on 127.0.0.1:$port"
  done
  echo "ready: examples/regions.yaml can start (skylift up -c examples/regions.yaml --region all --detach)"
}

stop_all() {
  local i name port data
  for i in "${!REGIONS[@]}"; do
    name="${REGIONS[$i]}" port="${REDIS_PORTS[$i]}"
    if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && [[ -f "$STATE/redis/$name.pid" ]]; then
      redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
      echo "redis $name: stopped"
    fi
  done
  for data in "$STATE/pg/$STANDBY_OF-standby" "${REGIONS[@]/#/$STATE/pg/}"; do
    if [[ -f "$data/PG_VERSION" ]] && pg_running "$data"; then
      as_pg "$BIN/pg_ctl" stop -D "$data" -m fast -w -t 60 >/dev/null
      echo "postgres $(basename "$data"): stopped"
    fi
  done
}

status_all() {
  local i
  for i in "${!REGIONS[@]}"; do
    printf 'postgres %-12s 127.0.0.1:%s  %s\n' "${REGIONS[$i]}" "${PG_PORTS[$i]}" \
      "$(pg_running "$STATE/pg/${REGIONS[$i]}" && echo running || echo stopped)"
  done
  printf 'postgres %-12s 127.0.0.1:%s  %s\n' "$STANDBY_OF-standby" "$STANDBY_PORT" \
    "$(pg_running "$STATE/pg/$STANDBY_OF-standby" && echo running || echo stopped)"
  for i in "${!REGIONS[@]}"; do
    printf 'redis    %-12s 127.0.0.1:%s  %s\n' "${REGIONS[$i]}" "${REDIS_PORTS[$i]}" \
      "$(redis-cli -h 127.0.0.1 -p "${REDIS_PORTS[$i]}" ping 2>/dev/null | grep -q PONG && echo running || echo stopped)"
  done
}

BIN="$(pg_bin)"
case "${1:-start}" in
  start) start_all ;;
  stop) stop_all ;;
  status) status_all ;;
  reset) stop_all; rm -rf "$STATE"; echo "deleted $STATE" ;;
  *) echo "usage: $0 [start|stop|status|reset]" >&2; exit 2 ;;
esac
