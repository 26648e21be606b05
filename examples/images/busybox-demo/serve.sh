#!/bin/sh
echo "$SKYLIFT_REPLICA" > /www/replica
if [ -n "$IGNORE_TERM" ]; then trap '' TERM; else trap 'exit 0' TERM; fi
httpd -f -p "${PORT:-8080}" -h /www &
wait
