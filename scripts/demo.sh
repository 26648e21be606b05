#!/usr/bin/env bash
# Set up (apt + .venv), start the quickstart (3 replicas behind HAProxy on
# 127.0.0.1:8080), and show requests being spread across the replicas.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
CONFIG=examples/quickstart.yaml
skylift up -c "$CONFIG" --detach
echo
skylift status -c "$CONFIG"
echo
echo "9 requests to http://127.0.0.1:8080/ :"
for _ in $(seq 9); do
  python3 -c 'import json,urllib.request;print("  ",json.load(urllib.request.urlopen("http://127.0.0.1:8080/")))'
done
echo
echo "Try:  .venv/bin/skylift scale -c $CONFIG web 5   then   .venv/bin/skylift status -c $CONFIG"
echo "Stop: .venv/bin/skylift down -c $CONFIG"
