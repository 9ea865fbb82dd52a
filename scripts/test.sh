#!/usr/bin/env bash
# `make test`: lint and type-check, then the test suite on SQLite and on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

echo "== ruff check"; $BIN/ruff check .
echo "== ruff format --check"; $BIN/ruff format --check .
echo "== mypy"; $BIN/mypy

# The browser tests drive Debian's chromium through Playwright; the second run needs
# PostgreSQL. Install what is missing in one go.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian's ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

pgdir=$(mktemp -d /tmp/hotline-pg.XXXXXX)
pgport=${HOTLINE_TEST_PG_PORT:-54329}
cleanup() { bash scripts/pg.sh stop "$pgdir"; }
trap cleanup EXIT
bash scripts/pg.sh start "$pgdir" "$pgport"

# The two engines' runs go side by side, one per core, each with its own temporary
# directory and log; HOTLINE_TEST_SERIAL=1 runs them one after the other instead.
logs=$(mktemp -d /tmp/hotline-test.XXXXXX)
pg_url="postgresql+asyncpg://postgres@127.0.0.1:$pgport/postgres"
suite() {  # NAME [VAR=value …]: the suite on one engine, into $logs/NAME.log
  local name=$1
  shift
  env "$@" $BIN/pytest -q -p no:cacheprovider --durations=10 --basetemp="$logs/$name" \
    "${args[@]}" >"$logs/$name.log" 2>&1
}
args=("$@")
status=0
if [ "${HOTLINE_TEST_SERIAL:-0}" = 1 ]; then
  suite sqlite || status=1
  suite postgresql HOTLINE_TEST_DATABASE_URL="$pg_url" || status=1
else
  suite sqlite & sqlite=$!
  suite postgresql HOTLINE_TEST_DATABASE_URL="$pg_url" & postgresql=$!
  wait $sqlite || status=1
  wait $postgresql || status=1
fi
echo "== pytest (SQLite)"; cat "$logs/sqlite.log"
echo "== pytest (PostgreSQL)"; cat "$logs/postgresql.log"
rm -rf "$logs"
exit $status
