#!/usr/bin/env python3
"""Faults behind the load balancer: three local lossd replicas behind nginx, under steady load;
one replica is SIGKILLed, another SIGTERMed, and no client request may fail.

nginx runs with deploy/nginx/nginx.conf itself, changed only where the machine differs from
Docker Compose: an `upstream` block of the three local replicas instead of Docker's DNS name,
listening on 127.0.0.1, logs and temporary files in a temporary directory. Its retry policy
(`proxy_next_upstream ... non_idempotent`) is the repository's.

    cargo build --release
    python3 bench/lb_faults.py            # needs nginx (Debian: apt-get install -y nginx)

Phases, under CLIENTS keep-alive clients sending small mse_loss requests (and every tenth a
1 MiB one) through nginx without pause:
  1. steady (3 s);  2. SIGKILL replica 0, then 5 s;  3. SIGTERM replica 1 (it drains and exits),
  then 3 s more.
Exit status 0 when every request of every phase got 200.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import requests
from procstat import free_port

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def wait_healthy(url, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return True
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    return False


def local_config(ports, lb_port, tmp):
    """The repository's nginx.conf, pointed at local replicas."""
    with open(os.path.join(REPO, "deploy", "nginx", "nginx.conf")) as f:
        conf = f.read()
    servers = "".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;\n" for p in ports)
    upstream = f"    upstream lossd_local {{\n{servers}    }}\n\n"
    conf, n = re.subn(r"set \$lossd_upstream http://lossd-replica:8080;",
                      "set $lossd_upstream http://lossd_local;", conf)
    assert n == 1, "nginx.conf: the proxy_pass target moved; update lb_faults.py"
    conf = conf.replace("http {\n", "http {\n" + upstream, 1)
    conf = re.sub(r"listen 8080;", f"listen 127.0.0.1:{lb_port};", conf)
    conf = conf.replace("access_log /dev/stdout lossd;", f"access_log {tmp}/access.log lossd;")
    conf = conf.replace("error_log stderr warn;", f"error_log {tmp}/error.log warn;\npid {tmp}/nginx.pid;")
    conf = conf.replace("worker_processes auto;", "worker_processes 2;")
    for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        conf = conf.replace("http {\n", f"http {{\n    {d}_temp_path {tmp}/{d};\n", 1)
    return conf


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=os.path.join(REPO, "target", "release", "lossd"))
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        sys.exit("lb_faults.py needs nginx (Debian: apt-get install -y nginx)")

    tmp = tempfile.mkdtemp(prefix="lb-faults-")
    ports = [free_port() for _ in range(3)]
    lb_port = free_port()
    replicas = []
    for p in ports:
        env = dict(os.environ, LOSSD_ADDR=f"127.0.0.1:{p}", LOSSD_LOG="warn")
        replicas.append(subprocess.Popen([args.binary], env=env, stdout=subprocess.DEVNULL))
    for p in ports:
        assert wait_healthy(f"http://127.0.0.1:{p}/healthz"), f"replica on {p} did not start"
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(local_config(ports, lb_port, tmp))
    lb = subprocess.Popen([nginx, "-p", tmp, "-c", conf, "-g", "daemon off;"])
    base = f"http://127.0.0.1:{lb_port}"
    assert wait_healthy(base + "/lb-healthz"), "nginx did not start"

    small = {"input": [[0.5, 1.5, -2.0], [1.0, 0.0, 3.0]], "target": [[1.0, 1.0, -1.0], [0.0, 0.0, 2.0]]}
    big = {"input": [0.25] * 60000, "target": [0.5] * 60000, "grad": True}
    phase = ["steady"]
    counts = {}
    failures = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(k):
        s = requests.Session()
        i = 0
        while not stop.is_set():
            body = big if i % 10 == k % 10 else small
            i += 1
            ph = phase[0]
            try:
                r = s.post(base + "/v1/losses/mse_loss", json=body, timeout=60)
                ok = r.status_code == 200
                what = f"{r.status_code} {r.text[:200]}"
            except Exception as e:
                ok, what = False, f"{type(e).__name__}: {e}"
            with lock:
                c = counts.setdefault(ph, [0, 0])
                c[0] += 1
                if not ok:
                    c[1] += 1
                    failures.append((ph, what))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
    try:
        for t in threads:
            t.start()
        time.sleep(3)
        phase[0] = "after SIGKILL of replica 0"
        replicas[0].send_signal(signal.SIGKILL)
        time.sleep(5)
        phase[0] = "while replica 1 drains (SIGTERM)"
        t0 = time.monotonic()
        replicas[1].send_signal(signal.SIGTERM)
        code = replicas[1].wait(timeout=60)
        drained = time.monotonic() - t0
        phase[0] = "after replica 1 exited"
        time.sleep(3)
        stop.set()
        for t in threads:
            t.join()
    finally:
        stop.set()
        lb.send_signal(signal.SIGQUIT)
        for r in replicas:
            if r.poll() is None:
                r.send_signal(signal.SIGTERM)
        for r in replicas + [lb]:
            try:
                r.wait(timeout=30)
            except subprocess.TimeoutExpired:
                r.kill()
    print(f"replica 1 drained and exited with status {code} in {drained:.2f} s")
    total = sum(c[0] for c in counts.values())
    for ph in ("steady", "after SIGKILL of replica 0", "while replica 1 drains (SIGTERM)",
               "after replica 1 exited"):
        c = counts.get(ph, [0, 0])
        print(f"{ph}: {c[0]} requests, {c[1]} failed")
    with open(os.path.join(tmp, "error.log")) as f:
        retried = sum(1 for line in f if "while" in line and "upstream" in line)
    print(f"nginx error log: {retried} upstream errors (each retried on another replica)")
    for ph, what in failures[:10]:
        print(f"  failed ({ph}): {what}")
    shutil.rmtree(tmp, ignore_errors=True)
    if failures or code != 0 or total == 0:
        print("FAIL")
        return 1
    print(f"PASS: {total} requests, none failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
