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

# The two runs go side by side: much of either is waiting (on servers it starts, on
# timers, on the browser). Each has its own temporary directory and its own log, which
# is printed whole when both are done. The scale-out test runs three servers flat out
# and times what they send, so it runs alone afterwards (PostgreSQL only).
pg_url="postgresql+asyncpg://postgres@127.0.0.1:$pgport/postgres"
scaleout=tests/e2e/test_scaleout.py
if [ $# -eq 0 ]; then side=(--ignore="$scaleout"); alone=("$scaleout"); else side=("$@"); alone=(); fi
logs=$(mktemp -d /tmp/hotline-test-logs.XXXXXX)
$BIN/pytest -q -p no:cacheprovider --basetemp="$logs/tmp-sqlite" "$@" >"$logs/sqlite.log" 2>&1 &
sqlite_run=$!
HOTLINE_TEST_DATABASE_URL="$pg_url" \
  $BIN/pytest -q -p no:cacheprovider --basetemp="$logs/tmp-postgres" "${side[@]}" \
  >"$logs/postgres.log" 2>&1 &
postgres_run=$!
status=0
wait $sqlite_run || status=1
echo "== pytest (SQLite)"; cat "$logs/sqlite.log"
wait $postgres_run || status=1
echo "== pytest (PostgreSQL)"; cat "$logs/postgres.log"
rm -rf "$logs"
if [ ${#alone[@]} -gt 0 ]; then
  echo "== pytest (PostgreSQL, scale-out)"
  HOTLINE_TEST_DATABASE_URL="$pg_url" $BIN/pytest -q -p no:cacheprovider "${alone[@]}" || status=1
fi
exit $status
