#!/usr/bin/env bash
# lossd's loss kernels against PyTorch CPU (1 thread and all cores) on the same shapes.
#
#   bash bench/compare_torch.sh                       # everything: ~15 min on 2 busy cores
#   bash bench/compare_torch.sh --filter 'mse|cross'  # some losses (regex on the name)
#   bash bench/compare_torch.sh --sizes 1e5,1e7 --divan-args '--max-time 5' --torch-budget 2
#   TORCH_PYTHON=/path/to/python-with-torch bash bench/compare_torch.sh   # no torch download
#
# Makes a venv with torch and numpy under target/bench/venv (never a test dependency), builds
# and runs `cargo bench -p lossd-kernels --bench losses`, times PyTorch, prints one table and
# writes it to target/bench/compare_torch.md (+ .json, + divan's raw output).
source "$(dirname "$0")/env.sh"

bench_python
log "load average before: $(loadavg)"
log "building the kernel benchmarks (cargo bench --no-run)"
cargo bench -q -p lossd-kernels --bench losses --no-run
start=$SECONDS
"$PY" bench/compare_torch.py "$@"
log "load average after: $(loadavg); compare_torch took $((SECONDS - start)) s after the build"
