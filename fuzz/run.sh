#!/usr/bin/env bash
# Fuzz lossd for a bounded time per target (default 60 s): the tensor decoder, whole loss
# requests through the real request types and kernels, batch bodies, and custom-loss
# expressions (parser, shape checks, evaluation and gradients), and Open Inference Protocol
# bodies (binary framing, header parser, the loss). Seeds come from the
# PyTorch cases in tests/fixtures. Any crash, panic, timeout or out-of-memory fails (libFuzzer
# exits non-zero and leaves the input in fuzz/artifacts/<target>/).
#
# Usage: fuzz/run.sh [seconds-per-target]
# Needs: cargo-fuzz (`cargo install cargo-fuzz --locked`); the stable toolchain with
# RUSTC_BOOTSTRAP=1 for the nightly-only flags cargo-fuzz passes.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
export RUSTC_BOOTSTRAP=1

python3 fuzz/seeds.py fuzz/corpus
cargo fuzz build -O --sanitizer none
for target in tensor_decode loss_request batch custom oip_binary grpc_receive; do
  echo "=== fuzz $target for ${seconds}s"
  mkdir -p "fuzz/artifacts/$target" "fuzz/corpus/$target"
  cargo fuzz run -O --sanitizer none "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 2>&1 | grep -E "^(stat::|#[0-9]+ +DONE|Done|==|INFO: -max_total_time)|panicked|ERROR|SUMMARY" || true
  # libFuzzer's status is lost in the pipe above: a crash leaves an artifact.
  if compgen -G "fuzz/artifacts/$target/*" >/dev/null; then
    echo "fuzz $target FAILED; reproducers:"; ls -l "fuzz/artifacts/$target"
    exit 1
  fi
done
echo "fuzz: no crash in ${seconds}s per target"
