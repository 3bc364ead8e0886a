"""Server CPU time per request for a 1M-element FP64 mse_loss (input + target, 16.8 MB of
binary tensors) sent by tritonclient, over HTTP (binary data) and gRPC: the measure of the
issue's target (3 GB/s of request bytes per core of server CPU, at most ~5.3 ms a request).

    python tests/oip/measure_cpu.py [--lossd target/release/lossd] [--requests 60]
        [--clients 2] [--rounds 3] [--only http|grpc]

It starts its own server, warms each transport up, then has `--clients` client processes
(each with its own connection, so the server is under load and its workers overlap) send
`--requests` requests in all, and reads the server's user and system CPU time from
/proc/PID/stat (every thread) before and after. Each round prints the CPU milliseconds per
request (user + sys, and each), the request bytes per second of server CPU time, and the
server's minor page faults and voluntary context switches per request (counts, steadier than
CPU time on a shared machine); the rounds show how steady the figures are. The clients' own
CPU is not counted.
"""

import argparse
import multiprocessing as mp
import os
import socket
import subprocess
import time

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

N = 1 << 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def counters(pid):
    """The user and system CPU seconds, minor page faults (all threads, exited ones too) and
    voluntary context switches (the threads alive now) of process `pid`."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    switches = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        switches += int(line.split()[1])
        except FileNotFoundError:
            pass  # a thread that ended meanwhile
    return np.array([int(fields[11]) / tick, int(fields[12]) / tick, int(fields[7]), switches])


def tensors():
    rng = np.random.default_rng(1)
    return rng.standard_normal(N), rng.standard_normal(N)


def client(transport, url):
    if transport == "http":
        return httpclient, httpclient.InferenceServerClient(url, network_timeout=120)
    return grpcclient, grpcclient.InferenceServerClient(url)


def inputs(mod, x, y):
    ins = [mod.InferInput("input", [x.size], "FP64"), mod.InferInput("target", [y.size], "FP64")]
    if mod is httpclient:
        ins[0].set_data_from_numpy(x, binary_data=True)
        ins[1].set_data_from_numpy(y, binary_data=True)
    else:
        ins[0].set_data_from_numpy(x)
        ins[1].set_data_from_numpy(y)
    return ins


def worker(transport, url, count, ready, start, done):
    """One client: says it is ready, waits for `start`, sends `count` requests, checks the
    last answer."""
    mod, c = client(transport, url)
    x, y = tensors()
    ins = inputs(mod, x, y)
    c.infer("mse_loss", ins)  # the connection is up before the clock starts
    ready.put(True)
    start.wait()
    for _ in range(count):
        loss = c.infer("mse_loss", ins).as_numpy("loss")
    want = np.mean((x - y) ** 2)
    assert abs(loss - want) <= 1e-12 * want, (loss, want)
    done.put(count)


def measure(transport, url, pid, requests, clients):
    # Fresh client processes: gRPC's core does not survive a fork of a process that used it.
    ctx = mp.get_context("spawn")
    ready, start, done = ctx.Queue(), ctx.Event(), ctx.Queue()
    share = [requests // clients + (i < requests % clients) for i in range(clients)]
    procs = [ctx.Process(target=worker, args=(transport, url, k, ready, start, done))
             for k in share]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    time.sleep(0.2)  # the warm-up requests' work is done
    before, t0 = counters(pid), time.perf_counter()
    start.set()
    sent = sum(done.get(timeout=600) for _ in procs)
    after, wall = counters(pid), time.perf_counter() - t0
    for p in procs:
        p.join()
        assert p.exitcode == 0, f"a client failed ({p.exitcode})"
    return (after - before) / sent, wall / sent


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lossd", default="target/release/lossd")
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=["http", "grpc"])
    a = ap.parse_args()
    hp, gp = free_port(), free_port()
    proc = subprocess.Popen([a.lossd, "--addr", f"127.0.0.1:{hp}", "--grpc-addr",
                             f"127.0.0.1:{gp}", "--log", "warn"])
    urls = {"http": f"127.0.0.1:{hp}", "grpc": f"127.0.0.1:{gp}"}
    try:
        for _ in range(100):
            try:
                if all(client(t, u)[1].is_server_live() for t, u in urls.items()):
                    break
            except Exception:
                pass
            time.sleep(0.1)
        size = 2 * N * 8
        for transport in [a.only] if a.only else ["http", "grpc"]:
            for r in range(a.rounds):
                (user, sys_, faults, switches), wall = measure(
                    transport, urls[transport], proc.pid, a.requests, a.clients)
                per = user + sys_
                print(f"{transport} round {r + 1}: {a.requests} requests of {size / 1e6:.1f} MB "
                      f"from {a.clients} clients: server CPU {per * 1e3:.2f} ms per request "
                      f"(user {user * 1e3:.2f}, sys {sys_ * 1e3:.2f}) = "
                      f"{size / per / 1e9:.2f} GB/s per core; wall {wall * 1e3:.1f} ms per "
                      f"request; {faults:.0f} minor faults, {switches:.0f} voluntary context "
                      f"switches per request", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
