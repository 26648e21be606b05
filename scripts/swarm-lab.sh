#!/usr/bin/env bash
# A local multi-node Docker Swarm: N network-namespace "hosts" on one machine.
#
#   scripts/swarm-lab.sh up N [--managers M]   build it (N nodes, the first M managers)
#   scripts/swarm-lab.sh status [--json]       list the nodes (name, address, node id, socket, role)
#   scripts/swarm-lab.sh down                  remove all of it (idempotent)
#
# Each node is a network namespace with its own address on a private bridge and
# its own dockerd (own --data-root, --exec-root, --pidfile, unix socket, cgroup
# parent), all joined into one swarm; the test image is imported on every node
# (there is no registry). The host's own dockerd (/var/run/docker.sock) is never
# used or touched. Recipe: docs/swarm.md. Must run as root.
#
# Environment (defaults in brackets):
#   SKYLIFT_LAB_PREFIX  [sl-lab]   names of namespaces, links, bridge, cgroups (<= 9 chars)
#   SKYLIFT_LAB_DIR     [/tmp/$SKYLIFT_LAB_PREFIX]  data dirs, sockets, logs, nodes.tsv/json
#   SKYLIFT_LAB_SUBNET  [10.232.0] first three octets of the lab's /24 (bridge .1, node i .(10+i))
#   SKYLIFT_LAB_IMAGE   [skylift-test/busybox:lab] tag of the test image on every node
#   SKYLIFT_LAB_IMAGE_TAR  a root file system tar to import instead of the built-in busybox one
#   SKYLIFT_LAB_TIMEOUT [60]       seconds to wait for each step (engines, joins, Ready)
#   SKYLIFT_LAB_TLS     [0]        1: each engine also listens on tcp://ADDRESS:2376 with mutual
#                                  TLS (CA, server and client certificates in $SKYLIFT_LAB_DIR/tls)
set -euo pipefail

PREFIX="${SKYLIFT_LAB_PREFIX:-sl-lab}"
LAB_DIR="${SKYLIFT_LAB_DIR:-/tmp/$PREFIX}"
SUBNET="${SKYLIFT_LAB_SUBNET:-10.232.0}"
IMAGE="${SKYLIFT_LAB_IMAGE:-skylift-test/busybox:lab}"
IMAGE_TAR="${SKYLIFT_LAB_IMAGE_TAR:-}"
TIMEOUT="${SKYLIFT_LAB_TIMEOUT:-60}"
TLS="${SKYLIFT_LAB_TLS:-0}"
BRIDGE="$PREFIX-br"
FWD_COMMENT="$PREFIX lab bridge"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MAX_NODES=20

die() {
  echo "swarm-lab: error: $*" >&2
  exit 1
}
log() { echo "swarm-lab: $*" >&2; }

usage() {
  sed -n '3,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

need_root_and_tools() {
  [[ "$(id -u)" == 0 ]] || die "must run as root (it creates network namespaces and runs dockerd)"
  local tool
  for tool in ip nsenter iptables dockerd docker tar; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found: apt-get install -y iproute2 util-linux iptables docker.io"
  done
  # interface names are at most 15 characters: "<prefix>-h<NN>"
  [[ ${#PREFIX} -le 9 && "$PREFIX" =~ ^[a-z][a-z0-9-]*$ ]] ||
    die "SKYLIFT_LAB_PREFIX='$PREFIX': use at most 9 characters [a-z0-9-], starting with a letter"
  [[ "$SUBNET" =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] ||
    die "SKYLIFT_LAB_SUBNET='$SUBNET': give the first three octets of a /24, e.g. 10.232.0"
}

ns() { echo "$PREFIX-n$1"; }
host_link() { echo "$PREFIX-h$1"; }
node_dir() { echo "$LAB_DIR/n$1"; }
node_addr() { echo "$SUBNET.$((10 + $1))"; }
sock() { echo "$(node_dir "$1")/docker.sock"; }
dk() {
  local i="$1"
  shift
  timeout 60 docker -H "unix://$(sock "$i")" "$@"
}

# Poll "$@" until it succeeds or TIMEOUT seconds pass (then fail saying $what).
wait_until() {
  local what="$1"
  shift
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${TIMEOUT}s waiting for $what"
    sleep 0.2
  done
}

# -- up ------------------------------------------------------------------------

check_free() {
  [[ ! -e "$LAB_DIR/nodes.tsv" ]] || die "the lab is already up ($LAB_DIR/nodes.tsv): run '$0 down' first"
  if ip link show "$BRIDGE" >/dev/null 2>&1 || ip netns list | grep -q "^$PREFIX-n[0-9]"; then
    die "leftovers of a lab named '$PREFIX' exist (bridge or namespaces): run '$0 down' first"
  fi
  [[ ! -e "$LAB_DIR" ]] || die "$LAB_DIR exists (a half-built lab?): run '$0 down' first"
  # the /24 must not be on any interface or route already (docker0, regions harness, ...)
  if ip -4 route show | grep -q "^$SUBNET\."; then
    die "$SUBNET.0/24 is already routed on this host: set SKYLIFT_LAB_SUBNET to a free /24"
  fi
}

build_rootfs_tar() {
  local out="$1" busybox="" candidate root applet
  for candidate in /bin/busybox /usr/bin/busybox; do
    if [[ -x "$candidate" ]] && ! head -c 4096 "$candidate" | grep -q ld-linux; then
      busybox="$candidate"
      break
    fi
  done
  [[ -n "$busybox" ]] || die "no static busybox for the test image: apt-get install -y busybox-static"
  root="$LAB_DIR/rootfs"
  mkdir -p "$root"/{bin,tmp,www/cgi-bin}
  chmod 1777 "$root/tmp"
  cp "$busybox" "$root/bin/busybox"
  for applet in sh httpd wget rm sleep cat; do ln -sf busybox "$root/bin/$applet"; done
  # the same serving script as the demo and test images (tests/fixtures/docker.py)
  install -m 0755 "$REPO_ROOT/examples/images/busybox-demo/serve.sh" "$root/serve.sh"
  echo ok >"$root/www/healthz"
  cat >"$root/www/cgi-bin/sleep" <<'EOF'
#!/bin/sh
sleep 3
printf 'Content-Type: text/plain\r\nX-Replica: %s\r\n\r\n' "$(cat /www/replica)"
cat /www/replica
EOF
  chmod 0755 "$root/www/cgi-bin/sleep"
  tar -C "$root" --numeric-owner --owner=0 --group=0 -cf "$out" .
}

# A CA, a server certificate per node (its address as SAN) and one client certificate
# (ca.pem, cert.pem, key.pem: the names DOCKER_CERT_PATH expects), valid 2 days.
make_tls() {
  local n="$1" dir="$LAB_DIR/tls" i
  mkdir -p "$dir"
  chmod 700 "$dir"
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=$PREFIX lab CA" \
    -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" 2>>"$dir/openssl.log"
  sign() { # file-stem common-name extensions
    openssl req "${ec[@]}" -subj "/CN=$2" -keyout "$dir/$1-key.pem" -out "$dir/$1.csr" 2>>"$dir/openssl.log"
    openssl x509 -req -in "$dir/$1.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
      -CAcreateserial -days 2 -extfile <(printf '%b\n' "$3") -out "$dir/$1.pem" 2>>"$dir/openssl.log"
  }
  for ((i = 1; i <= n; i++)); do
    sign "server$i" "node$i" "subjectAltName=IP:$(node_addr "$i")\nextendedKeyUsage=serverAuth"
  done
  sign client "$PREFIX-client" "extendedKeyUsage=clientAuth"
  mv "$dir/client.pem" "$dir/cert.pem"
  mv "$dir/client-key.pem" "$dir/key.pem"
}

start_node() {
  local i="$1" dir tls_args=()
  dir="$(node_dir "$i")"
  if [[ "$TLS" == 1 ]]; then
    tls_args=(-H "tcp://$(node_addr "$i"):2376" --tlsverify --tlscacert "$LAB_DIR/tls/ca.pem"
      --tlscert "$LAB_DIR/tls/server$i.pem" --tlskey "$LAB_DIR/tls/server$i-key.pem")
  fi
  mkdir -p "$dir"/{data,exec}
  echo '{}' >"$dir/daemon.json" # never the host's /etc/docker/daemon.json
  ip netns add "$(ns "$i")"
  ip link add "$(host_link "$i")" type veth peer name "$PREFIX-v$i"
  ip link set "$(host_link "$i")" master "$BRIDGE"
  ip link set "$(host_link "$i")" up
  ip link set "$PREFIX-v$i" netns "$(ns "$i")"
  ip -n "$(ns "$i")" link set "$PREFIX-v$i" name eth0
  ip -n "$(ns "$i")" addr add "$(node_addr "$i")/24" dev eth0
  ip -n "$(ns "$i")" link set eth0 up
  ip -n "$(ns "$i")" link set lo up
  # nsenter --net, not `ip netns exec` (which remounts /sys: dockerd then finds no
  # devices cgroup). setsid: the engine outlives this script and ignores its Ctrl-C.
  setsid nsenter --net="/var/run/netns/$(ns "$i")" dockerd \
    --config-file "$dir/daemon.json" \
    --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/docker.pid" \
    -H "unix://$dir/docker.sock" "${tls_args[@]}" --bip "172.30.$i.1/24" \
    --exec-opt native.cgroupdriver=cgroupfs --cgroup-parent "/$PREFIX-n$i" >"$dir/dockerd.log" 2>&1 </dev/null &
}

node_id() { dk "$1" info --format '{{.Swarm.NodeID}}'; }

write_nodes() {
  local n="$1" managers="$2" i role id tsv="$LAB_DIR/nodes.tsv" json
  : >"$tsv.tmp"
  json="["
  for ((i = 1; i <= n; i++)); do
    role=worker
    ((i <= managers)) && role=manager
    id="$(node_id "$i")"
    printf '%s\t%s\t%s\t%s\t%s\n' "node$i" "$(node_addr "$i")" "$id" "unix://$(sock "$i")" "$role" >>"$tsv.tmp"
    ((i > 1)) && json+=","
    json+="{\"name\":\"node$i\",\"address\":\"$(node_addr "$i")\",\"node_id\":\"$id\","
    json+="\"socket\":\"unix://$(sock "$i")\",\"role\":\"$role\",\"namespace\":\"$(ns "$i")\"}"
  done
  echo "$json]" >"$LAB_DIR/nodes.json"
  mv "$tsv.tmp" "$tsv" # nodes.tsv last: its presence means "up"
}

ready_count() {
  local want="$1" ready
  ready="$(dk 1 node ls --format '{{.Status}}' | grep -c '^Ready$' || true)"
  [[ "$ready" == "$want" ]]
}

image_on() { dk "$1" image inspect "$IMAGE"; }

cmd_up() {
  local n="${1:-}" managers=1 i
  shift || true
  while (($#)); do
    case "$1" in
      --managers) managers="${2:-}"; shift 2 || usage ;;
      *) usage ;;
    esac
  done
  [[ "$n" =~ ^[0-9]+$ ]] && ((n >= 1 && n <= MAX_NODES)) || die "up N: N must be 1..$MAX_NODES (got '$n')"
  [[ "$managers" =~ ^[0-9]+$ ]] && ((managers >= 1 && managers <= n)) ||
    die "--managers M: M must be 1..N (got '$managers')"
  need_root_and_tools
  check_free
  local started=$SECONDS
  mkdir -p "$LAB_DIR"
  echo "$n" >"$LAB_DIR/size"
  # any exit before the end (die, a failing command under set -e) leaves a half-built lab
  trap 'log "up failed part-way; logs in $LAB_DIR/n*/dockerd.log; clean with: $0 down"' EXIT

  ip link add "$BRIDGE" type bridge
  ip addr add "$SUBNET.1/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # the host's dockerd sets FORWARD to DROP; bridged node-to-node traffic crosses it
  iptables -w 10 -I FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment "$FWD_COMMENT" -j ACCEPT

  if [[ "$TLS" == 1 ]]; then
    command -v openssl >/dev/null 2>&1 || die "SKYLIFT_LAB_TLS=1 needs openssl: apt-get install -y openssl"
    make_tls "$n"
  fi
  for ((i = 1; i <= n; i++)); do start_node "$i"; done

  local tar="$LAB_DIR/image.tar"
  if [[ -n "$IMAGE_TAR" ]]; then
    [[ -r "$IMAGE_TAR" ]] || die "SKYLIFT_LAB_IMAGE_TAR=$IMAGE_TAR is not readable"
    tar="$IMAGE_TAR"
  else
    build_rootfs_tar "$tar"
  fi
  for ((i = 1; i <= n; i++)); do wait_until "the engine of node$i ($(sock "$i"))" dk "$i" version; done

  local pids=()
  for ((i = 1; i <= n; i++)); do
    dk "$i" import --change 'CMD ["/bin/sh", "/serve.sh"]' --change 'ENV PORT=8080' \
      --change 'EXPOSE 8080' "$tar" "$IMAGE" >/dev/null &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || die "docker import of $IMAGE failed on a node"; done

  dk 1 swarm init --advertise-addr "$(node_addr 1)" --listen-addr "$(node_addr 1):2377" >/dev/null
  local manager_token worker_token role_token
  manager_token="$(dk 1 swarm join-token -q manager)"
  worker_token="$(dk 1 swarm join-token -q worker)"
  for ((i = 2; i <= n; i++)); do
    role_token="$worker_token"
    ((i <= managers)) && role_token="$manager_token"
    dk "$i" swarm join --token "$role_token" --advertise-addr "$(node_addr "$i")" \
      --listen-addr "$(node_addr "$i"):2377" "$(node_addr 1):2377" >/dev/null
  done
  wait_until "$n nodes Ready in the swarm" ready_count "$n"
  # a label per node, for placement constraints (node.labels.lab.node==node2)
  for ((i = 1; i <= n; i++)); do
    dk 1 node update --label-add "lab.node=node$i" "$(node_id "$i")" >/dev/null
  done
  for ((i = 1; i <= n; i++)); do wait_until "$IMAGE on node$i" image_on "$i"; done
  write_nodes "$n" "$managers"
  trap - EXIT
  log "up: $n nodes in $((SECONDS - started))s (image $IMAGE on every node)"
  cmd_status
}

# -- status --------------------------------------------------------------------

cmd_status() {
  if [[ "${1:-}" == "--json" ]]; then
    [[ -e "$LAB_DIR/nodes.json" ]] || die "the lab is not up ($LAB_DIR/nodes.json missing)"
    cat "$LAB_DIR/nodes.json"
    return
  fi
  [[ -e "$LAB_DIR/nodes.tsv" ]] || die "the lab is not up ($LAB_DIR/nodes.tsv missing): run '$0 up N'"
  local name addr id socket role state
  printf '%-7s %-14s %-26s %-8s %-7s %s\n' NAME ADDRESS NODE_ID ROLE STATE SOCKET
  while IFS=$'\t' read -r name addr id socket role; do
    state="$(timeout 10 docker -H "$socket" info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo down)"
    printf '%-7s %-14s %-26s %-8s %-7s %s\n' "$name" "$addr" "$id" "$role" "$state" "$socket"
  done <"$LAB_DIR/nodes.tsv"
}

# -- down ----------------------------------------------------------------------

# Every pid in the lab's network namespaces and cgroups (dockerd, containerd, shims, containers).
lab_pids() {
  local namespace cg
  for namespace in $(ip netns list | awk -v p="^$PREFIX-n[0-9]+$" '$1 ~ p {print $1}'); do
    ip netns pids "$namespace" 2>/dev/null || true
  done
  for cg in /sys/fs/cgroup/pids/"$PREFIX"-n* /sys/fs/cgroup/unified/"$PREFIX"-n* /sys/fs/cgroup/"$PREFIX"-n*; do
    if [[ -d "$cg" ]]; then find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null || true; fi
  done
  return 0
}

# A pid that still runs (not gone, not a zombie waiting for init to reap it).
running() {
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != Z ]]
}

# lab_pids plus the engines named by our pid files, as long as any of them runs.
lab_running() {
  local pid
  for pid in $(lab_pids) ${ENGINES[@]+"${ENGINES[@]}"}; do
    if running "$pid"; then echo "$pid"; fi
  done
  return 0
}

engines_running() {
  local pid
  for pid in ${ENGINES[@]+"${ENGINES[@]}"}; do
    if running "$pid"; then echo "$pid"; fi
  done
  return 0
}

ENGINES=()
stop_engines() {
  local pidfile pid deadline
  for pidfile in "$LAB_DIR"/n*/docker.pid; do
    [[ -e "$pidfile" ]] || continue
    pid="$(cat "$pidfile")"
    # only a dockerd this lab started: its pid file names it and its cmdline names our dir
    if [[ -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "--pidfile $pidfile"; then
      ENGINES+=("$pid")
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  # graceful: each engine stops its containers and its containerd
  deadline=$((SECONDS + 20))
  while [[ -n "$(engines_running)" ]] && ((SECONDS < deadline)); do sleep 0.2; done
  # what remains (an engine killed earlier leaves containerd, shims, containers): TERM, then KILL
  local left
  left="$(lab_running | sort -u)"
  if [[ -n "$left" ]]; then
    # shellcheck disable=SC2086
    kill -TERM $left 2>/dev/null || true
    deadline=$((SECONDS + 5))
    while [[ -n "$(lab_running)" ]] && ((SECONDS < deadline)); do sleep 0.2; done
  fi
  left="$(lab_running | sort -u)"
  if [[ -n "$left" ]]; then
    log "down: SIGKILL to what did not stop: $(echo "$left" | tr '\n' ' ')"
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while [[ -n "$(lab_running)" ]] && ((SECONDS < deadline)); do sleep 0.2; done
  fi
}

unmount_lab() {
  local target
  # deepest first: mounts dockerd made under its data and exec roots (overlays, netns binds, shm)
  awk -v d="$LAB_DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r target; do
    umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || log "down: could not unmount $target"
  done
}

cmd_down() {
  need_root_and_tools
  local started=$SECONDS namespace cg
  stop_engines
  [[ -z "$(lab_running)" ]] || die "processes of the lab still run: $(lab_running | tr '\n' ' ')"
  for namespace in $(ip netns list | awk -v p="^$PREFIX-n[0-9]+$" '$1 ~ p {print $1}'); do
    ip netns del "$namespace" # takes its end of the veth, and so the host end, with it
  done
  for cg in /sys/fs/cgroup/*/"$PREFIX"-n* /sys/fs/cgroup/"$PREFIX"-n*; do
    if [[ -d "$cg" ]]; then find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
  done
  local link
  for link in $(ip -o link show | awk -F': ' '{sub(/@.*/, "", $2); print $2}'); do
    if [[ "$link" =~ ^$PREFIX-[hv][0-9]+$ ]]; then ip link del "$link" 2>/dev/null || true; fi
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  while iptables -w 10 -D FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment "$FWD_COMMENT" -j ACCEPT 2>/dev/null; do :; done
  if [[ -d "$LAB_DIR" ]]; then
    unmount_lab
    rm -rf --one-file-system "$LAB_DIR"
  fi
  log "down: lab '$PREFIX' removed in $((SECONDS - started))s"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) shift; cmd_status "$@" ;;
  *) usage ;;
esac
