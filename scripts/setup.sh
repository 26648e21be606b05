#!/usr/bin/env bash
# Set up skylift on a fresh Debian/Ubuntu machine: system packages (apt), then a
# virtualenv in .venv with skylift and its dev tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
need_bare=()  # installed without their recommended packages
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
if [ "${SKYLIFT_SETUP_DEV:-0}" = 1 ]; then
  # integration tests start a throwaway PostgreSQL
  command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
    || need+=(postgresql)
  # the platform's tests start a throwaway redis-server
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  # the docker backend's tests run a real dockerd and build a tiny image from static busybox
  command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
  dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
  # the Prometheus tests start their own throwaway server (/usr/bin/prometheus) on a free
  # port with their own config; the package's service (:9090, on systemd hosts) is not used.
  # No recommends: they would add (and start) prometheus-node-exporter.
  command -v prometheus >/dev/null 2>&1 || need_bare+=(prometheus)
  # the regions' tests run each region as a host of its own: a network namespace (ip netns)
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  # the geo-DNS tests start their own PowerDNS (geoip backend) on a free loopback port
  command -v pdns_server >/dev/null 2>&1 || [ -x /usr/sbin/pdns_server ] || need+=(pdns-server)
  dpkg -s pdns-backend-geoip >/dev/null 2>&1 || need+=(pdns-backend-geoip)
  # the multi-node swarm tests reach the lab's engines over TCP with TLS certificates
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
fi
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ $((${#need[@]} + ${#need_bare[@]})) -gt 0 ]; then
  echo "setup: installing system packages with apt: ${need[*]} ${need_bare[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  if [ ${#need_bare[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      "${need_bare[@]}" >/dev/null
  fi
fi

# Debian's pdns-server enables its own pdns service on port 53 (on systemd hosts). The tests
# and `skylift dns serve` run PowerDNS with their own config: stop that one, so nothing answers
# on :53 that a test could query by mistake.
if [ "${SKYLIFT_SETUP_DEV:-0}" = 1 ] && command -v systemctl >/dev/null 2>&1 \
  && systemctl is-enabled --quiet pdns 2>/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO systemctl disable --now pdns >/dev/null 2>&1 || true
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  python3 -m venv .venv
fi
extras=""
[ "${SKYLIFT_SETUP_DEV:-0}" = 1 ] && extras="[dev]"
stamp=".venv/.skylift-installed$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing skylift$extras into .venv" >&2
  .venv/bin/pip install -q --disable-pip-version-check -e ".$extras"
  touch "$stamp"
fi
