#!/usr/bin/env bash
# lossd against a reference FastAPI + uvicorn + PyTorch service (bench/peer/app.py), driven by
# wrk over loopback: req/s, p50, p99, request-body MB/s, server CPU per request, and lossd's
# JSON and base64 decode speed estimated from single-request latencies.
#
#   bash bench/http.sh                                    # ~5 min plus builds and installs
#   bash bench/http.sh --duration 30 --big-duration 60    # longer runs, on a quiet machine
#   TORCH_PYTHON=/path/to/python-with-torch bash bench/http.sh   # no torch download
#
# Installs wrk (apt-get) if missing, makes a venv with torch, numpy, fastapi, uvicorn[standard]
# under target/bench/venv, builds lossd in release, starts both services on 127.0.0.1
# (ports 18180 and 18181), stops them when done (or interrupted), prints the tables and writes
# them to target/bench/http.md (+ .json).
source "$(dirname "$0")/env.sh"

if ! command -v wrk > /dev/null; then
    log "installing wrk (apt-get)"
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
    $SUDO apt-get install -y wrk > /dev/null 2>&1 || { $SUDO apt-get update > /dev/null && $SUDO apt-get install -y wrk > /dev/null; }
fi
bench_python fastapi 'uvicorn[standard]'
log "building lossd (cargo build --release)"
cargo build -q --release --bin lossd
target_dir="$(cargo metadata -q --format-version 1 --no-deps | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
log "load average before: $(loadavg)"
start=$SECONDS
"$PY" bench/http_bench.py --lossd "$target_dir/release/lossd" --peer-python "$PY" "$@"
log "load average after: $(loadavg); http took $((SECONDS - start)) s after the build"
