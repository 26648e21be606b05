#!/usr/bin/env bash
# Build the tiny demo image used by examples/docker.yaml and examples/swarm.yaml,
# with no registry: a root file system of static busybox imported with `docker import`.
# Each container serves /healthz and /replica (its replica id) with busybox httpd.
# Needs: apt-get install -y docker.io busybox-static, and a running dockerd.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tag="${1:-skylift-demo/busybox:1}"
rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs"/{bin,www} && install -d -m 1777 "$rootfs/tmp"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh httpd wget rm sleep cat; do ln -s busybox "$rootfs/bin/$applet"; done
install -m 0755 "$here/busybox-demo/serve.sh" "$rootfs/serve.sh"
echo ok > "$rootfs/www/healthz"
tar -C "$rootfs" -c . | docker import \
  --change 'CMD ["/bin/sh", "/serve.sh"]' --change 'ENV PORT=8080' --change 'EXPOSE 8080' \
  - "$tag" >/dev/null
echo "built $tag"
