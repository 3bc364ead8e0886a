#!/usr/bin/env python3
"""Measures each loss family's working set per decoded element: the factor the memory budget
charges (src/memory.rs, `estimate::Family`).

For each case, a fresh lossd (release build, a budget large enough not to interfere) gets one
large request with the options that hold the most (`grad: true`, `reduction: "none"`, JSON
output); the peak resident size (VmHWM) past the idle server's, less the body, divided by the
decoded elements times 8 bytes, is the factor.

    cargo build --release
    python3 bench/memory_factors.py
"""

import json
import os
import signal
import subprocess
import sys
import time

import requests
from procstat import free_port, hwm

MIB = 1 << 20


def grid(rows, cols, v=0.5):
    row = [v] * cols
    return [row] * rows


def cases():
    n = 1000
    yield "mse_loss (elementwise)", "/v1/losses/mse_loss", {
        "input": grid(n, n, 0.25), "target": grid(n, n), "grad": True, "reduction": "none"}, 2 * n * n
    yield "huber_loss (elementwise)", "/v1/losses/huber_loss", {
        "input": grid(n, n, 0.25), "target": grid(n, n), "grad": True, "reduction": "none"}, 2 * n * n
    rows, classes = 10000, 100
    yield "cross_entropy (rowwise)", "/v1/losses/cross_entropy", {
        "input": grid(rows, classes, 0.1), "target": [i % classes for i in range(rows)],
        "grad": True, "reduction": "none"}, rows * classes + rows
    yield "multilabel_soft_margin_loss (rowwise)", "/v1/losses/multilabel_soft_margin_loss", {
        "input": grid(rows, classes, 0.1), "target": grid(rows, classes, 1),
        "grad": True, "reduction": "none"}, 2 * rows * classes
    yield "kl_div (rowwise)", "/v1/losses/kl_div", {
        "input": grid(rows, classes, -2.0), "target": grid(rows, classes, 0.01),
        "grad": True, "reduction": "none"}, 2 * rows * classes
    yield "triplet_margin_loss (heavy)", "/v1/losses/triplet_margin_loss", {
        "anchor": grid(rows, classes, 0.1), "positive": grid(rows, classes, 0.2),
        "negative": grid(rows, classes, 0.3), "grad": True, "reduction": "none"}, 3 * rows * classes
    yield "cosine_embedding_loss (heavy)", "/v1/losses/cosine_embedding_loss", {
        "input1": grid(rows, classes, 0.1), "input2": grid(rows, classes, 0.2),
        "target": [1] * rows, "grad": True, "reduction": "none"}, 2 * rows * classes + rows
    yield "custom expression (heavy)", "/v1/losses/custom", {
        "expression": "sum(square(x - y) * exp(-abs(x)) + 0.5 * huber_loss(x, y, reduction=\"none\"))",
        "tensors": {"x": grid(n, n, 0.25), "y": grid(n, n)}, "grad": ["x", "y"]}, 2 * n * n
    yield "batch of 4 mse_loss (heavy)", "/v1/batch", {"jobs": [
        {"loss": "mse_loss", "input": grid(500, n, 0.25), "target": grid(500, n),
         "grad": True, "reduction": "none"}] * 4}, 4 * 2 * 500 * n


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/lossd"
    print(f"{'case':40} {'elements':>10} {'body MiB':>9} {'peak-idle MiB':>14} {'factor':>7}")
    for name, path, body, elements in cases():
        data = json.dumps(body).encode()
        port = free_port()
        env = dict(os.environ, LOSSD_ADDR=f"127.0.0.1:{port}", LOSSD_LOG="warn",
                   LOSSD_MAX_MEMORY="16GiB", LOSSD_MAX_BODY_BYTES=str(512 * MIB),
                   LOSSD_MAX_ELEMENTS=str(1 << 26))
        server = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except requests.ConnectionError:
                    time.sleep(0.05)
            idle = hwm(server.pid)
            r = requests.post(f"http://127.0.0.1:{port}{path}", data=data,
                              headers={"Content-Type": "application/json"}, timeout=300)
            assert r.status_code == 200, (name, r.status_code, r.text[:300])
            peak = hwm(server.pid)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        held = peak - idle - len(data)
        print(f"{name:40} {elements:>10} {len(data) / MIB:>9.1f} {(peak - idle) / MIB:>14.1f} "
              f"{held / (elements * 8):>7.2f}")


if __name__ == "__main__":
    main()
