# Shared setup for bench/*.sh (sourced, not run): the repository root, the Python environment
# with PyTorch, the load-average helper.
#
# Environment:
#   TORCH_PYTHON    an existing Python with torch installed: reused instead of pip-installing
#                   torch (~5 GB) into the benchmark venv (its site-packages are linked in)
#   BENCH_VENV      where the venv goes (default: target/bench/venv, ignored by git)
#   CARGO_TARGET_DIR  honoured as usual

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BENCH_OUT="$ROOT/target/bench"
BENCH_VENV="${BENCH_VENV:-$BENCH_OUT/venv}"
mkdir -p "$BENCH_OUT"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# What the peers in bench/peer/ import besides torch and numpy (pydantic comes with fastapi;
# uvloop and httptools are the event loop and HTTP parser uvicorn runs fast.py with).
PEER_PACKAGES=(fastapi uvicorn orjson uvloop httptools)

# bench_python PACKAGES...: a venv at $BENCH_VENV with torch and numpy plus PACKAGES;
# sets PY to its interpreter. Installs only what is missing (a stamp file per package set).
bench_python() {
    local base=python3 stamp
    if [[ -n "${TORCH_PYTHON:-}" ]]; then
        "$TORCH_PYTHON" -c 'import torch' \
            || { echo "TORCH_PYTHON=$TORCH_PYTHON cannot import torch" >&2; exit 1; }
        base="$TORCH_PYTHON"
    fi
    # A venv made from another interpreter (TORCH_PYTHON set or changed since) is remade, so
    # that the linked packages match its Python version.
    if [[ -x "$BENCH_VENV/bin/python" && "$(cat "$BENCH_VENV/.base" 2>/dev/null)" != "$base" ]]; then
        log "remaking $BENCH_VENV (made from another Python)"
        rm -rf "$BENCH_VENV"
    fi
    if [[ ! -x "$BENCH_VENV/bin/python" ]]; then
        log "creating $BENCH_VENV"
        "$base" -m venv "$BENCH_VENV"
        "$BENCH_VENV/bin/python" -m pip install -q --upgrade pip
        echo "$base" > "$BENCH_VENV/.base"
    fi
    PY="$BENCH_VENV/bin/python"
    if [[ -n "${TORCH_PYTHON:-}" ]]; then
        # Make TORCH_PYTHON's packages (torch, numpy) importable from the venv, after its own.
        local site
        site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
        "$TORCH_PYTHON" -c 'import sysconfig; p = sysconfig.get_paths(); print(p["purelib"]); print(p["platlib"])' \
            | sort -u > "$site/zz_torch_python.pth"
    fi
    stamp="$BENCH_VENV/.installed-$(echo "torch numpy $*" | tr -c 'A-Za-z0-9_.=\n' '_')"
    if [[ ! -e "$stamp" ]]; then
        local want=("$@")
        "$PY" -c 'import torch, numpy' 2>/dev/null || want=(torch numpy "${want[@]}")
        if ((${#want[@]})); then
            log "pip install ${want[*]} (into $BENCH_VENV)"
            "$PY" -m pip install -q "${want[@]}"
        fi
        touch "$stamp"
    fi
    "$PY" -c 'import torch; print("torch", torch.__version__, "from", torch.__file__)' >&2
}
