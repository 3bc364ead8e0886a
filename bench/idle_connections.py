#!/usr/bin/env python3
"""Idle keep-alive connections: their memory, and that a server holding many still serves.

Starts the lossd binary on 127.0.0.1 (its open-file limit raised), opens CONNECTIONS - 1
connections that each send one small mse_loss request and then stay open and idle, and
reports the server's resident size before and after (the memory of one idle keep-alive
connection), then checks that a new client (the CONNECTIONS-th, at the default
--max-connections of 10,000) is served at once and that the idle ones are still served.

    cargo build --release
    python3 bench/idle_connections.py                 # 10,000 connections
    python3 bench/idle_connections.py --connections 2000 --max-connections 1000

With --max-connections below CONNECTIONS, the connections past the limit wait in the listen
backlog: they are answered only once earlier ones close (checked: the script closes half of
the first ones and expects the waiting ones to be answered).
"""

import argparse
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from procstat import free_port, rss

MIB = 1 << 20
REQUEST = (
    b"POST /v1/losses/mse_loss HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 33\r\n\r\n"
    b'{"input": [1.0], "target": [2.0]}'
)


def read_answer(s):
    """Reads one small response; its status code."""
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return int(data[9:12]) if len(data) >= 12 else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default="target/release/lossd")
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--max-connections", type=int)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 1000
    if hard < want:
        sys.exit(f"the open-file limit's hard limit is {hard}; need {want} (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    port = free_port()
    env = dict(os.environ, LOSSD_ADDR=f"127.0.0.1:{port}", LOSSD_LOG="warn",
               LOSSD_HEADER_TIMEOUT="600")
    if args.max_connections:
        env["LOSSD_MAX_CONNECTIONS"] = str(args.max_connections)
    server = subprocess.Popen([args.binary], env=env, stdout=subprocess.DEVNULL)
    ok = True
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        # Warm the server up with a few requests on one connection.
        s = socket.create_connection(("127.0.0.1", port))
        for _ in range(100):
            s.sendall(REQUEST)
            read_answer(s)
        s.close()
        time.sleep(0.5)
        before = rss(server.pid)
        # Without a lower limit: the idle ones and the new client make CONNECTIONS.
        limit = args.max_connections or args.connections - 1
        held, waiting = [], []
        t = time.monotonic()
        opening = args.connections if args.max_connections else limit
        for i in range(opening):
            c = socket.create_connection(("127.0.0.1", port))
            if i < limit:
                c.sendall(REQUEST)
                if read_answer(c) != 200:
                    print(f"connection {i}: not answered 200")
                    ok = False
                held.append(c)
            else:
                c.settimeout(0.5)
                c.sendall(REQUEST)
                waiting.append(c)
        opened = time.monotonic() - t
        time.sleep(1.0)
        after = rss(server.pid)
        n = len(held)
        print(f"{n} idle keep-alive connections opened in {opened:.1f} s; RSS {before / MIB:.1f} -> "
              f"{after / MIB:.1f} MiB: {(after - before) / n / 1024:.1f} KiB per idle connection")
        if waiting:
            # Past the limit: not answered while the held ones stay open.
            answered = 0
            for c in waiting[:20]:
                try:
                    if c.recv(1):
                        answered += 1
                except socket.timeout:
                    pass
            print(f"{len(waiting)} connections past --max-connections: {answered} of 20 answered "
                  "while the limit is reached (expected 0)")
            ok &= answered == 0
            for c in held[: len(waiting)]:
                c.close()
            got = 0
            for c in waiting:
                c.settimeout(10)
                got += read_answer(c) == 200
            print(f"after closing {len(waiting)} held connections: {got} of {len(waiting)} waiting "
                  "ones answered 200")
            ok &= got == len(waiting)
        else:
            # At the limit or below: a new client is served at once.
            t = time.monotonic()
            c = socket.create_connection(("127.0.0.1", port))
            c.sendall(REQUEST)
            status = read_answer(c)
            took = (time.monotonic() - t) * 1e3
            print(f"a new client with {n} idle connections open: {status} in {took:.1f} ms")
            ok &= status == 200
            # And the idle ones are still usable.
            bad = 0
            for c in held[:: max(1, n // 100)]:
                c.sendall(REQUEST)
                bad += read_answer(c) != 200
            print(f"every 100th idle connection reused: {bad} not answered 200")
            ok &= bad == 0
        for c in held + waiting:
            c.close()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
