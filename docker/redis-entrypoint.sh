#!/bin/sh
# Starts redis-server with the bandit module, requiring a password: from the
# file named by REDIS_PASSWORD_FILE (a Docker/Compose secret) or from
# REDIS_PASSWORD. Refuses to start without one, since the server listens on
# all interfaces. Extra arguments (e.g. --replicaof host port) are passed on.
set -eu
if [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
  REDIS_PASSWORD=$(cat "$REDIS_PASSWORD_FILE")
fi
if [ -z "${REDIS_PASSWORD:-}" ]; then
  echo "redis: set REDIS_PASSWORD or REDIS_PASSWORD_FILE" >&2
  exit 1
fi
# The password goes through a config file on stdin, not the command line, so
# it does not show in the process list.
exec redis-server - "$@" <<CONF
bind 0.0.0.0
dir /data
appendonly yes
requirepass $REDIS_PASSWORD
masterauth $REDIS_PASSWORD
loadmodule /usr/lib/redis/modules/libbandit_redis.so
CONF
