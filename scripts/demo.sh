#!/usr/bin/env bash
# Set up (apt + .venv), then show skylift at work on this machine:
#  1. the quickstart: 3 replicas behind HAProxy on http://127.0.0.1:8080/, requests spread;
#  2. autoscaling: a service on http://127.0.0.1:8081/ that follows a load ramp
#     (1 -> 5 replicas and back), with the engine's reasons.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
QUICK=examples/quickstart.yaml
AUTO=examples/autoscale.yaml

echo "== 1. quickstart: 3 replicas behind HAProxy"
skylift up -c "$QUICK" --detach
skylift status -c "$QUICK"
echo "9 requests to http://127.0.0.1:8080/ :"
for _ in $(seq 9); do
  python3 -c 'import json,urllib.request;print("  ",json.load(urllib.request.urlopen("http://127.0.0.1:8080/")))'
done

echo
echo "== 2. autoscaling: a load ramp 10 -> 150 -> 10 requests/s on http://127.0.0.1:8081/"
skylift up -c "$AUTO" --detach
python scripts/demo_autoscale.py
echo
echo "Both services keep running. Try: .venv/bin/skylift explain -c $AUTO web"
echo "Stop: .venv/bin/skylift down -c $QUICK && .venv/bin/skylift down -c $AUTO"
