#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for the AIM-Memory tests and prints its URL:
# trust authentication on 127.0.0.1:$APT_PG_PORT (default 54329), data in $APT_PG_DATA
# (default /tmp/apt-ext-pg-<port>, created fresh). Installs Debian's postgresql package when no
# server binaries are found. Reuses a server already answering on that port.
# Usage: export APT_TEST_POSTGRES_URL=$(bash tools/start_test_postgres.sh)
set -euo pipefail
PORT=${APT_PG_PORT:-54329}
DATA=${APT_PG_DATA:-/tmp/apt-ext-pg-$PORT}
find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
BIN=$(find_bin)
if [ -z "$BIN" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
  fi
  BIN=$(find_bin)
  [ -n "$BIN" ] || { echo "start_test_postgres: no PostgreSQL server binaries" >&2; exit 1; }
fi
AS=()  # initdb and postgres refuse to run as root
if [ "$(id -u)" = 0 ]; then AS=(runuser -u postgres --); fi
if ! "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
  rm -rf "$DATA"
  mkdir -p "$DATA"
  [ "$(id -u)" = 0 ] && chown postgres: "$DATA"
  "${AS[@]}" "$BIN/initdb" -D "$DATA" -A trust -U postgres >/dev/null
  "${AS[@]}" "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -o "-p $PORT -k $DATA -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null
fi
echo "postgresql://postgres@127.0.0.1:$PORT/postgres"
