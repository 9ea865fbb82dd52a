#!/usr/bin/env bash
# `make vendor`: fetch the dashboard's JS libraries from the npm registry into
# backend/web/static/vendor/ (committed, so nothing is fetched at run time).
set -euo pipefail
cd "$(dirname "$0")/.."
LEAFLET=1.9.4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "leaflet@$LEAFLET" >/dev/null && tar xzf "leaflet-$LEAFLET.tgz")
dest=backend/web/static/vendor/leaflet
rm -rf "$dest"
mkdir -p "$dest/images"
cp "$work/package/dist/leaflet.js" "$work/package/dist/leaflet.css" "$work/package/LICENSE" "$dest/"
cp "$work/package/dist/images/"*.png "$dest/images/"
echo "leaflet $LEAFLET → $dest"
