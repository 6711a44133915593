#!/usr/bin/env bash
# Entrypoint of the redis:7 stand-in (redis.Dockerfile), as the official image's: redis-server
# without a config file listens on every interface with protected mode off.
set -euo pipefail
if [[ ${1:-} == redis-server && ! -f ${2:-} ]]; then
    set -- "$@" --protected-mode no
fi
exec "$@"
