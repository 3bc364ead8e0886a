#!/usr/bin/env python3
"""The memory storm: many concurrent large requests against a lossd with a memory budget.

Starts the lossd binary on 127.0.0.1 with LOSSD_MAX_MEMORY, then at once CLIENTS clients each
POST a large nested-JSON mse_loss body (every fourth client with curl, the rest with Python
requests), while a small mse_loss request is sent every 50 ms. It samples the server's resident
size throughout and checks (docs/operations.md, "Memory"):

- peak RSS at most 1.25 x the budget;
- every large client gets 200, or 503 problem+json with Retry-After (`overloaded`: the budget
  stayed full until its deadline; `timeout`: admitted too late to finish): no reset, no other
  status; at least 4 are served;
- every small request is answered 200 within 2 s;
- 15 s after the storm, RSS is at most 256 MiB (the reduced scale: 128 MiB: the floor of a process that has served, thread stacks and allocator metadata, does not scale down).

Full size (the figures in the commit that added this script):

    cargo build --release
    python3 bench/memory_storm.py

Reduced scale for CI (budget 256 MiB, bodies of 14 MiB, 24 clients):

    python3 bench/memory_storm.py --ci

Exit status 0 when every check holds. Needs `requests` and curl.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import requests
from procstat import free_port, rss

MIB = 1 << 20


def large_body(size):
    """An mse_loss body of about `size` bytes: input and target of shape (rows, 1000), numbers
    written as Python writes random floats (about 19 characters each)."""
    rng = random.Random(7)
    distinct = ["[" + ", ".join(repr(rng.random()) for _ in range(1000)) + "]" for _ in range(16)]
    row_bytes = sum(len(r) for r in distinct) / len(distinct) + 2
    rows = max(1, int(size / 2 / row_bytes))
    tensor = "[" + ", ".join(distinct[i % 16] for i in range(rows)) + "]"
    return f'{{"input": {tensor}, "target": {tensor}}}'.encode()


def classify(status, headers, body):
    """'ok', 'refused overloaded' / 'refused timeout' (503 problem+json with Retry-After: the
    memory budget stayed full until the deadline, or the request was admitted too late to
    finish within it), or a description of anything else."""
    if status == 200:
        return "ok"
    ctype = headers.get("content-type", "")
    if status == 503 and ctype.startswith("application/problem+json"):
        try:
            code = json.loads(body).get("code")
        except ValueError:
            code = None
        if code in ("overloaded", "timeout") and headers.get("retry-after"):
            return f"refused {code}"
        return f"503 {code} retry-after={headers.get('retry-after')}"
    return f"status {status} {ctype} {body[:200]!r}"


def python_client(url, body, out, i):
    start = time.monotonic()
    try:
        r = requests.post(
            url, data=body, headers={"Content-Type": "application/json"}, timeout=180
        )
        out[i] = (classify(r.status_code, r.headers, r.content), time.monotonic() - start, "requests")
    except Exception as e:  # a reset or a timeout: the failure this script looks for
        out[i] = (f"error {type(e).__name__}: {e}", time.monotonic() - start, "requests")


def curl_client(url, path, out, i):
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as d:
        head, resp = os.path.join(d, "h"), os.path.join(d, "b")
        p = subprocess.run(
            ["curl", "-sS", "-o", resp, "-D", head, "-w", "%{http_code}", "--max-time", "180",
             "-H", "Content-Type: application/json", "--data-binary", f"@{path}", url],
            capture_output=True, text=True,
        )
        took = time.monotonic() - start
        if p.returncode != 0:
            out[i] = (f"error curl exit {p.returncode}: {p.stderr.strip()}", took, "curl")
            return
        headers = {}
        with open(head) as f:
            for line in f:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
        with open(resp, "rb") as f:
            data = f.read()
        out[i] = (classify(int(p.stdout), headers, data), took, "curl")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default="target/release/lossd")
    ap.add_argument("--ci", action="store_true", help="reduced scale")
    ap.add_argument("--budget", type=int, help="LOSSD_MAX_MEMORY in bytes")
    ap.add_argument("--clients", type=int)
    ap.add_argument("--body-mib", type=float)
    ap.add_argument("--settle", type=float, default=15.0, help="seconds after the storm")
    args = ap.parse_args()
    scale = 0.25 if args.ci else 1.0
    budget = args.budget or int((1 << 30) * scale)
    clients = args.clients or (24 if args.ci else 48)
    body_size = int((args.body_mib or 57 * scale) * MIB)
    # The process's own floor after serving (thread stacks, allocator metadata) does not scale.
    after_limit = (128 if args.ci else 256) * MIB
    peak_limit = int(1.25 * budget)

    body = large_body(body_size)
    tmp = tempfile.NamedTemporaryFile(prefix="storm-", suffix=".json", delete=False)
    tmp.write(body)
    tmp.close()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, LOSSD_ADDR=f"127.0.0.1:{port}", LOSSD_MAX_MEMORY=str(budget),
               LOSSD_LOG="warn")
    server = subprocess.Popen([args.binary], env=env, stdout=subprocess.DEVNULL)
    failures = []
    try:
        for _ in range(100):
            try:
                if requests.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.05)
        print(f"lossd pid {server.pid}, budget {budget / MIB:.0f} MiB, {clients} clients x "
              f"{len(body) / MIB:.1f} MiB, RSS at start {rss(server.pid) / MIB:.1f} MiB")

        peak = [0]
        sampling = threading.Event()

        def sample():
            while not sampling.is_set():
                peak[0] = max(peak[0], rss(server.pid))
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        small = {"input": [[0.5, 1.5, -2.0], [1.0, 0.0, 3.0]], "target": [[1.0, 1.0, -1.0], [0.0, 0.0, 2.0]]}
        small_results = []
        storm_done = threading.Event()

        def one_small():
            start = time.monotonic()
            try:
                r = requests.post(base + "/v1/losses/mse_loss", json=small, timeout=30)
                small_results.append((r.status_code, time.monotonic() - start))
            except Exception as e:
                small_results.append((f"{type(e).__name__}", time.monotonic() - start))

        def small_ticker():
            threads = []
            while not storm_done.is_set():
                t = threading.Thread(target=one_small)
                t.start()
                threads.append(t)
                time.sleep(0.05)
            for t in threads:
                t.join()

        ticker = threading.Thread(target=small_ticker)
        ticker.start()
        url = base + "/v1/losses/mse_loss"
        out = [None] * clients
        threads = []
        start = time.monotonic()
        for i in range(clients):
            if i % 4 == 3:
                t = threading.Thread(target=curl_client, args=(url, tmp.name, out, i))
            else:
                t = threading.Thread(target=python_client, args=(url, body, out, i))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        storm_time = time.monotonic() - start
        storm_done.set()
        ticker.join()
        sampling.set()
        sampler.join()

        served = sum(1 for o in out if o[0] == "ok")
        refused = sum(1 for o in out if o[0].startswith("refused"))
        bad = [o for o in out if o[0] != "ok" and not o[0].startswith("refused")]
        by_tool = {}
        for o in out:
            by_tool.setdefault(o[2], {}).setdefault(o[0].split(":")[0], 0)
            by_tool[o[2]][o[0].split(":")[0]] += 1
        print(f"storm: {storm_time:.1f} s; large: {served} served (200), {refused} refused "
              f"(503 + Retry-After), {len(bad)} other; by client: {by_tool}")
        for o in bad[:5]:
            print("  other:", o)
        lat = sorted(t for _, t in small_results)
        small_bad = [s for s, t in small_results if s != 200 or t > 2.0]
        if lat:
            print(f"small: {len(lat)} requests, all 200 within 2 s: {not small_bad}; latency "
                  f"p50 {lat[len(lat) // 2] * 1e3:.1f} ms, p99 {lat[int(len(lat) * 0.99)] * 1e3:.1f} ms, "
                  f"max {lat[-1] * 1e3:.1f} ms")
        print(f"peak RSS {peak[0] / MIB:.1f} MiB (limit {peak_limit / MIB:.0f} MiB)")
        if peak[0] > peak_limit:
            failures.append("peak RSS over the limit")
        if bad:
            failures.append(f"{len(bad)} large clients got neither 200 nor 503 with Retry-After")
        if served < 4:
            failures.append(f"only {served} large requests served")
        if small_bad or not lat:
            failures.append(f"small requests not all 200 within 2 s: {small_bad[:5]}")
        time.sleep(args.settle)
        after = rss(server.pid)
        print(f"RSS {args.settle:.0f} s after the storm: {after / MIB:.1f} MiB "
              f"(limit {after_limit / MIB:.0f} MiB)")
        if after > after_limit:
            failures.append("RSS did not come back")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        os.unlink(tmp.name)
    if failures:
        print("FAIL: " + "; ".join(failures))
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    if not shutil.which("curl"):
        sys.exit("memory_storm.py needs curl")
    sys.exit(main())
