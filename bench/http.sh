#!/usr/bin/env bash
# lossd against two Python services doing the same work (bench/peer/: app.py, FastAPI + pydantic;
# fast.py, FastAPI + orjson without validation), driven by wrk over loopback: req/s, p50, p99 and
# server CPU per request (worker processes included), lossd's GET /healthz floor, base64 bytes
# per core, lossd's decode speed estimated from single-request latencies, and the targets.
#
#   bash bench/http.sh                                    # ~8 min plus builds and installs
#   bash bench/http.sh --rounds 5 --big-duration 60       # more rounds, on a quiet machine
#   bash bench/http.sh --lossd path/to/lossd              # a built binary: no cargo build
#   TORCH_PYTHON=/path/to/python-with-torch bash bench/http.sh   # no torch download
#
# Installs wrk (apt-get) if missing, makes a venv with torch, numpy, fastapi, uvicorn, orjson,
# uvloop and httptools under target/bench/venv, builds lossd in release, starts lossd twice
# (defaults, and --log warn) and both peers on 127.0.0.1 (ports 18180-18183), stops them when
# done (or interrupted), prints the tables and writes them to target/bench/http.md (+ .json).
source "$(dirname "$0")/env.sh"

if ! command -v wrk > /dev/null; then
    log "installing wrk (apt-get)"
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
    $SUDO apt-get install -y wrk > /dev/null 2>&1 || { $SUDO apt-get update > /dev/null && $SUDO apt-get install -y wrk > /dev/null; }
fi
bench_python "${PEER_PACKAGES[@]}"
# The binary to measure: --lossd PATH when given, else a release build of this checkout.
binary=()
if [[ " $* " != *" --lossd "* && " $* " != *" --lossd="* ]]; then
    log "building lossd (cargo build --release)"
    cargo build -q --release --bin lossd
    target_dir="$(cargo metadata -q --format-version 1 --no-deps | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    binary=(--lossd "$target_dir/release/lossd")
fi
log "load average before: $(loadavg)"
start=$SECONDS
"$PY" bench/http_bench.py "${binary[@]}" --peer-python "$PY" "$@"
log "load average after: $(loadavg); http took $((SECONDS - start)) s after the build"
