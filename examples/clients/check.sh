#!/usr/bin/env bash
# Runs the client examples of README.md (examples/clients/) against a lossd and checks that
# they print what the README says they print, against a server that wants an API key.
# Usage: examples/clients/check.sh [path/to/lossd]
set -euo pipefail
cd "$(dirname "$0")/../.."
binary=${1:-target/release/lossd}
venv=target/clients-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check requests==2.32.5 numpy==2.4.6
port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# With an API key, as a deployment would run it: the clients send LOSSD_API_KEY.
export LOSSD_API_KEY="k-clients-$RANDOM$RANDOM"
LOSSD_API_KEYS="$LOSSD_API_KEY" "$binary" --addr "127.0.0.1:$port" --log error &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
py=$("$venv/bin/python" examples/clients/python_client.py "http://127.0.0.1:$port")
js=$(node examples/clients/js_client.mjs "http://127.0.0.1:$port")
fail=0
for line in "$py" "$js"; do
  while IFS= read -r l; do
    if ! grep -qF "\`$l\`" README.md; then echo "not in README: $l"; fail=1; fi
  done <<< "$line"
done
[ $fail = 0 ] && echo "client examples: output matches README.md"
exit $fail
