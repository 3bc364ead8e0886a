#!/usr/bin/env bash
# Schema conformance: schemathesis generates requests for every route of /openapi.json, valid
# and invalid, and checks every response (errors included) against the document, with all
# checks but positive_data_acceptance (a schema cannot say that two tensors' shapes must
# match, so some schema-valid requests are rightly refused).
#
# Usage: .ci/schemathesis.sh [path/to/lossd] [python]   (defaults: target/release/lossd, python3)
# Needs: schemathesis (pip); CI installs it into a venv and passes that venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-target/release/lossd}
python=${2:-python3}
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$binary" --addr "127.0.0.1:$port" --log error &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
  sleep 0.1
done
"$python" -m schemathesis.cli run "http://127.0.0.1:$port/openapi.json" \
  --checks all --exclude-checks positive_data_acceptance --no-color
