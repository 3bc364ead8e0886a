"""Server CPU time per request for a 1M-element FP64 mse_loss (input + target, 16 MB) sent
by tritonclient with binary data, over HTTP and gRPC, from /proc/PID/stat (utime + stime).

    python tests/oip/measure_cpu.py [path/to/lossd] [requests]   (default: target/release/lossd, 40)

Prints, per transport, the CPU milliseconds per request and the request bytes per second of
server CPU time (GB/s per core); the target is 3 GB/s or more.
"""

import os
import socket
import subprocess
import sys
import time

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/lossd"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    hp, gp = free_port(), free_port()
    proc = subprocess.Popen([binary, "--addr", f"127.0.0.1:{hp}", "--grpc-addr",
                             f"127.0.0.1:{gp}", "--log", "warn"])
    try:
        h = httpclient.InferenceServerClient(f"127.0.0.1:{hp}", network_timeout=120)
        g = grpcclient.InferenceServerClient(f"127.0.0.1:{gp}")
        for _ in range(100):
            try:
                if h.is_server_live() and g.is_server_live():
                    break
            except Exception:
                pass
            time.sleep(0.1)
        rng = np.random.default_rng(1)
        x, y = rng.standard_normal(1 << 20), rng.standard_normal(1 << 20)
        want = np.mean((x - y) ** 2)
        size = x.nbytes + y.nbytes
        for name, mod, client in (("HTTP", httpclient, h), ("gRPC", grpcclient, g)):
            ins = [mod.InferInput("input", [x.size], "FP64"),
                   mod.InferInput("target", [y.size], "FP64")]
            ins[0].set_data_from_numpy(x)
            ins[1].set_data_from_numpy(y)
            for _ in range(3):  # warm up
                client.infer("mse_loss", ins)
            before, t0 = cpu_seconds(proc.pid), time.perf_counter()
            for _ in range(n):
                loss = client.infer("mse_loss", ins).as_numpy("loss")
            cpu, wall = cpu_seconds(proc.pid) - before, time.perf_counter() - t0
            assert abs(loss - want) <= 1e-12 * want, (loss, want)
            per = cpu / n
            print(f"{name}: {n} requests of {size / 1e6:.1f} MB, server CPU {per * 1e3:.2f} ms "
                  f"per request = {size / per / 1e9:.2f} GB/s per core "
                  f"(wall {wall / n * 1e3:.1f} ms per request)")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
