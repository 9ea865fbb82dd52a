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

echo "== pytest (SQLite)"
$BIN/pytest -q -p no:cacheprovider "$@"

echo "== pytest (PostgreSQL)"
HOTLINE_TEST_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:$pgport/postgres" \
  $BIN/pytest -q -p no:cacheprovider "$@"
