#!/usr/bin/env bash
# `make test`: lint and type-check, then the test suite on SQLite and on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

echo "== ruff check"; $BIN/ruff check .
echo "== ruff format --check"; $BIN/ruff format --check .
echo "== mypy"; $BIN/mypy

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
