#!/usr/bin/env bash
# Start or stop a throw-away PostgreSQL server on 127.0.0.1 for the tests.
#   scripts/pg.sh start DATADIR PORT   installs Debian's postgresql if missing
#   scripts/pg.sh stop DATADIR
set -euo pipefail

find_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    if [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  done
  return 1
}

as_owner() {
  # PostgreSQL refuses to run as root: run its tools as the postgres user then.
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

cmd=${1:?start or stop}
datadir=${2:?data directory}

case "$cmd" in
start)
  port=${3:?port}
  if ! bindir=$(find_bin); then
    echo "PostgreSQL not found: installing Debian's postgresql" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
    bindir=$(find_bin)
  fi
  mkdir -p "$datadir"
  if [ "$(id -u)" = 0 ]; then chown postgres "$datadir"; fi
  as_owner "$bindir/initdb" -D "$datadir" -U postgres -A trust -E UTF8 --no-locale >/dev/null
  as_owner "$bindir/pg_ctl" -D "$datadir" -l "$datadir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $datadir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start >/dev/null
  echo "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" >&2
  ;;
stop)
  if bindir=$(find_bin) && [ -f "$datadir/postmaster.pid" ]; then
    as_owner "$bindir/pg_ctl" -D "$datadir" -m fast -w stop >/dev/null || true
  fi
  rm -rf "$datadir"
  ;;
*)
  echo "usage: $0 start DATADIR PORT | stop DATADIR" >&2
  exit 2
  ;;
esac
