"""lossd against a reference FastAPI + uvicorn + PyTorch service (bench/peer/app.py), over
loopback, with wrk: req/s, p50, p99 and the CPU each server spent per request.

Run by `bench/http.sh` (which installs wrk and the Python packages and builds lossd); by hand:

    python bench/http_bench.py --lossd target/release/lossd [--duration 10] [--big-duration 15]

Cases (the same bytes to both services):
  mse_small      mse_loss, 3×5 nested JSON input and target
  ce_small_grad  cross_entropy, 32×10 nested JSON logits, 32 class indices, grad: true
  mse_1m_json    mse_loss, 1,000,000 floats each for input and target, nested JSON
  mse_1m_b64     the same values as base64 float64 ({shape, dtype, base64})

Small cases run with --connections connections; the 1M cases once with 1 connection (one
request at a time: its latency is the single-request latency) and once with 2. For lossd, two
more 1M runs send the same bodies with an invalid first byte: lossd reads the whole body and
answers 400 at once, so their latency is the transfer + body collection floor; the decode
estimates subtract it (and the kernel's time, when bench/compare_torch.sh has measured it).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench_load import MachineLoad

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "target" / "bench"
BODIES = OUT / "bodies"
LUA = ROOT / "bench" / "wrk_post.lua"
N_BIG = 1_000_000


# ---------------------------------------------------------------------------------------------
# request bodies


def make_bodies() -> dict[str, Path]:
    BODIES.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    paths = {}

    def write(name: str, obj, prefix: bytes = b"") -> None:
        p = BODIES / f"{name}.json"
        if not p.exists():
            p.write_bytes(prefix + json.dumps(obj).encode())
        paths[name] = p

    write("mse_small", {
        "input": [[rng.uniform(-2, 2) for _ in range(5)] for _ in range(3)],
        "target": [[rng.uniform(-2, 2) for _ in range(5)] for _ in range(3)],
    })
    write("ce_small_grad", {
        "input": [[rng.uniform(-4, 4) for _ in range(10)] for _ in range(32)],
        "target": [rng.randrange(10) for _ in range(32)],
        "grad": True,
    })
    big = BODIES / "mse_1m_json.json"
    if not big.exists() or not (BODIES / "mse_1m_b64.json").exists():
        print(f"writing the 1M-float bodies to {BODIES}", file=sys.stderr, flush=True)
        a = [rng.uniform(-2, 2) for _ in range(N_BIG)]
        b = [rng.uniform(-2, 2) for _ in range(N_BIG)]
        for p in BODIES.glob("mse_1m_*"):
            p.unlink()
        enc = lambda v: base64.b64encode(struct.pack(f"<{len(v)}d", *v)).decode()  # noqa: E731
        write("mse_1m_json", {"input": a, "target": b})
        write("mse_1m_b64", {
            "input": {"shape": [N_BIG], "dtype": "float64", "base64": enc(a)},
            "target": {"shape": [N_BIG], "dtype": "float64", "base64": enc(b)},
        })
        del a, b
    paths["mse_1m_json"] = big
    paths["mse_1m_b64"] = BODIES / "mse_1m_b64.json"
    # The same bytes behind an invalid first byte: read in full, refused without parsing.
    for name in ("mse_1m_json", "mse_1m_b64"):
        bad = BODIES / f"{name}_bad.json"
        if not bad.exists():
            bad.write_bytes(b"x" + paths[name].read_bytes())
        paths[f"{name}_bad"] = bad
    return paths


# ---------------------------------------------------------------------------------------------
# processes


def cpu_seconds(pid: int) -> float:
    """utime + stime of pid and all its descendants (uvicorn's workers are children)."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            raw = (d / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        p = int(d.name)
        stats[p] = fields
        children.setdefault(int(fields[1]), []).append(p)
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += (int(stats[p][11]) + int(stats[p][12])) / tick
        todo += children.get(p, [])
    return total


class Server:
    def __init__(self, name: str, cmd: list[str], port: int, env: dict, cwd: Path = ROOT):
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                raise SystemExit(f"port {port} is already in use: stop what listens there or pass "
                                 f"--{name}-port")
        self.log = open(OUT / f"{name}.log", "wb")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **env},
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + 120
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"{name} exited at startup (see {OUT / (name + '.log')})")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                self.stop()
                raise SystemExit(f"{name} did not answer /healthz within 120 s")
            time.sleep(0.2)
        print(f"{name} up on {self.url} (pid {self.proc.pid})", file=sys.stderr, flush=True)

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self):
        if self.proc.poll() is None:
            # SIGTERM to the process group we created: uvicorn's workers go with their parent.
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def post(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


# ---------------------------------------------------------------------------------------------
# load


def wrk(server: Server, route: str, body: Path, connections: int, duration: float) -> dict:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "60s",
           "-s", str(LUA), f"{server.url}{route}"]
    cpu0, ru0 = server.cpu(), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, env={**os.environ, "BODY_FILE": str(body)},
                         capture_output=True, text=True, check=True).stdout
    cpu1, ru1 = server.cpu(), resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(ln for ln in out.splitlines() if ln.startswith("WRK_JSON "))
    r = json.loads(line[len("WRK_JSON "):])
    secs = r["duration_us"] / 1e6
    r["rps"] = r["requests"] / secs
    r["body_bytes"] = body.stat().st_size
    r["body_MBps"] = r["rps"] * r["body_bytes"] / 1e6
    r["server_cpu_s"] = cpu1 - cpu0
    r["server_cores"] = (cpu1 - cpu0) / secs
    r["server_cpu_us_per_req"] = (cpu1 - cpu0) / max(r["requests"], 1) * 1e6
    r["wrk_cpu_s"] = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    r["connections"] = connections
    errs = sum(r["errors"].values())
    print(f"  {server.name:6} {route:28} {body.name:22} c={connections:<3} "
          f"{r['rps']:10.1f} req/s  p50 {r['latency_us']['p50'] / 1e3:8.2f} ms  "
          f"p99 {r['latency_us']['p99'] / 1e3:8.2f} ms  errors {errs}",
          file=sys.stderr, flush=True)
    return r


def kernel_estimate() -> float | None:
    """mse_loss f64 forward at 1e6 elements, from compare_torch's divan run (1e7 / 10)."""
    p = OUT / "compare_torch.json"
    if not p.exists():
        return None
    for r in json.loads(p.read_text())["rows"]:
        if (r["loss"], r["dtype"], r["pass"], r["size"]) == ("mse_loss", "f64", "forward", "1e7") and r["lossd"]:
            return r["lossd"] / 10
    return None


def fmt_ms(us: float) -> str:
    return f"{us / 1e3:.3g} ms" if us >= 1000 else f"{us:.0f} µs"


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lossd", required=True, help="the lossd release binary")
    ap.add_argument("--peer-python", default=sys.executable, help="Python with fastapi, uvicorn, torch")
    ap.add_argument("--duration", type=float, default=10, help="seconds per small case (default 10)")
    ap.add_argument("--big-duration", type=float, default=15, help="seconds per 1M case (default 15)")
    ap.add_argument("--connections", type=int, default=16, help="connections for the small cases")
    ap.add_argument("--lossd-port", type=int, default=18180)
    ap.add_argument("--peer-port", type=int, default=18181)
    ap.add_argument("--skip-peer", action="store_true")
    args = ap.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    started = time.time()
    bodies = make_bodies()
    nproc = os.cpu_count() or 1
    servers: list[Server] = []
    load = MachineLoad().start()  # before the servers: their CPU time counts as ours

    def stop_all(*_):
        for s in servers:
            s.stop()

    signal.signal(signal.SIGTERM, lambda *_: (stop_all(), sys.exit(143)))
    results: dict[str, dict] = {}
    try:
        servers.append(Server("lossd", [args.lossd], args.lossd_port,
                              {"LOSSD_ADDR": f"127.0.0.1:{args.lossd_port}"}))
        if not args.skip_peer:
            servers.append(Server(
                "peer",
                [args.peer_python, "-m", "uvicorn", "app:app", "--host", "127.0.0.1",
                 "--port", str(args.peer_port), "--workers", "2"],
                args.peer_port, {}, cwd=ROOT / "bench" / "peer"))

        # Same answers from both, once, before timing anything.
        for case in ("mse_small", "ce_small_grad", "mse_1m_json", "mse_1m_b64"):
            route = "/v1/losses/" + ("cross_entropy" if case.startswith("ce") else "mse_loss")
            body = bodies[case].read_bytes()
            got = {}
            for s in servers:
                status, doc = post(s.url + route, body)
                if status != 200:
                    raise SystemExit(f"{s.name} {case}: HTTP {status}: {doc}")
                got[s.name] = doc["loss"]
            vals = list(got.values())
            ok = all(abs(v - vals[0]) <= 1e-9 * abs(vals[0]) for v in vals)
            print(f"check {case}: {got} {'agree' if ok else 'DISAGREE'}", file=sys.stderr, flush=True)
            if not ok:
                raise SystemExit("the services disagree")

        plan = [
            ("mse_small", "/v1/losses/mse_loss", args.connections, args.duration),
            ("ce_small_grad", "/v1/losses/cross_entropy", args.connections, args.duration),
            ("mse_1m_json", "/v1/losses/mse_loss", 1, args.big_duration),
            ("mse_1m_json", "/v1/losses/mse_loss", 2, args.big_duration),
            ("mse_1m_b64", "/v1/losses/mse_loss", 1, args.big_duration),
            ("mse_1m_b64", "/v1/losses/mse_loss", 2, args.big_duration),
        ]
        for s in servers:
            for case, route, conns, dur in plan:
                if case in ("mse_small", "ce_small_grad"):
                    # Warm-up, not recorded: the same load for 2 s first, so that the p99 is the
                    # steady state's and not the first connections' (thread and buffer set-up),
                    # for both servers alike.
                    wrk(s, route, bodies[case], conns, 2)
                results[f"{s.name}/{case}/c{conns}"] = wrk(s, route, bodies[case], conns, dur)
            if s.name == "lossd":
                for case in ("mse_1m_json_bad", "mse_1m_b64_bad"):
                    results[f"lossd/{case}/c1"] = wrk(s, "/v1/losses/mse_loss", bodies[case], 1, args.big_duration / 2)
    finally:
        stop_all()
        load.stop()

    # ---- the table
    has_peer = not args.skip_peer
    lines = [
        "| case | body | conns | lossd req/s | lossd p50 | lossd p99 | lossd MB/s | lossd CPU/req"
        + (" | ref req/s | ref p50 | ref p99 | ref MB/s | ref CPU/req | req/s lossd÷ref |" if has_peer else " |"),
        "|---|--:|--:|--:|--:|--:|--:|--:" + ("|--:|--:|--:|--:|--:|--:|" if has_peer else "|"),
    ]
    for case, _route, conns, _dur in plan:
        a = results[f"lossd/{case}/c{conns}"]
        size = a["body_bytes"]
        body = f"{size / 1e6:.1f} MB" if size > 1e5 else f"{size} B"
        row = (f"| {case} | {body} | {conns} | {a['rps']:.1f} | {fmt_ms(a['latency_us']['p50'])} "
               f"| {fmt_ms(a['latency_us']['p99'])} | {a['body_MBps']:.0f} | {fmt_ms(a['server_cpu_us_per_req'])} |")
        if has_peer:
            b = results[f"peer/{case}/c{conns}"]
            row += (f" {b['rps']:.1f} | {fmt_ms(b['latency_us']['p50'])} | {fmt_ms(b['latency_us']['p99'])} "
                    f"| {b['body_MBps']:.0f} | {fmt_ms(b['server_cpu_us_per_req'])} | {a['rps'] / b['rps']:.1f}× |")
        lines.append(row)
    errors = {k: v["errors"] for k, v in results.items()
              if sum(v["errors"].values()) and not k.endswith("_bad/c1")}
    lines.append("")
    lines.append("CPU/req: CPU time (user + system) the server process (and its workers) spent during the "
                 "run divided by the requests answered; wrk ran on the same cores.")
    if errors:
        lines.append(f"ERRORS (non-2xx, timeouts, socket errors): {errors}")

    # ---- decode estimates from the single-connection runs
    j, jb = results["lossd/mse_1m_json/c1"], results["lossd/mse_1m_json_bad/c1"]
    b, bb = results["lossd/mse_1m_b64/c1"], results["lossd/mse_1m_b64_bad/c1"]
    k = kernel_estimate()
    est = {}
    for name, full, floor in (("json", j, jb), ("base64", b, bb)):
        extra = (full["latency_us"]["p50"] - floor["latency_us"]["p50"]) / 1e6
        est[name] = {
            "body_bytes": full["body_bytes"], "p50_s": full["latency_us"]["p50"] / 1e6,
            "floor_p50_s": floor["latency_us"]["p50"] / 1e6, "decode_and_kernel_s": extra,
            "MBps_lower_bound": full["body_bytes"] / extra / 1e6 if extra > 0 else None,
            "MBps_kernel_subtracted": full["body_bytes"] / (extra - k) / 1e6 if k and extra > k else None,
        }
        # Per core: the server's CPU time per request, whole minus floor (large decodes run on
        # several threads, so the wall-clock difference is not a per-core figure).
        cpu = (full["server_cpu_us_per_req"] - floor["server_cpu_us_per_req"]) / 1e6
        est[name]["decode_cpu_s"] = cpu
        est[name]["MBps_per_core"] = full["body_bytes"] / cpu / 1e6 if cpu > 0 else None
    lines += ["", "lossd, one request at a time (1 connection), p50:", ""]
    lines += ["| body | whole request | same bytes, refused at byte 0 (transfer floor) | difference | "
              "decode MB/s (difference) | decode MB/s (difference − kernel) | server CPU, difference | "
              "decode MB/s per core (CPU difference) |", "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for name, e in est.items():
        lb = f"{e['MBps_lower_bound']:.0f}" if e["MBps_lower_bound"] else "—"
        ks = f"{e['MBps_kernel_subtracted']:.0f}" if e["MBps_kernel_subtracted"] else "—"
        pc = f"{e['MBps_per_core']:.0f}" if e["MBps_per_core"] else "—"
        lines.append(f"| {name}, {e['body_bytes'] / 1e6:.1f} MB | {e['p50_s'] * 1e3:.1f} ms | "
                     f"{e['floor_p50_s'] * 1e3:.1f} ms | {e['decode_and_kernel_s'] * 1e3:.1f} ms | {lb} | {ks} | "
                     f"{e['decode_cpu_s'] * 1e3:.1f} ms | {pc} |")
    lines.append("")
    lines.append("Large bodies decode on several threads (base64 in chunks, top-level arrays one per "
                 "thread), so the wall-clock difference is not per core; the last column divides the body "
                 "by the extra CPU time the server spent (it includes the kernel and the thread hand-offs).")
    lines.append("")
    lines.append(f"kernel (mse_loss f64 forward, 1e6 elements, estimated as divan's 1e7 median / 10): "
                 + (f"{k * 1e3:.2f} ms" if k else "not available (run bench/compare_torch.sh first)"))

    # ---- targets
    lines += ["", "Targets:"]
    if has_peer:
        for case in ("mse_small", "ce_small_grad"):
            a, r = results[f"lossd/{case}/c{args.connections}"], results[f"peer/{case}/c{args.connections}"]
            ratio, p99 = a["rps"] / r["rps"], a["latency_us"]["p99"] / 1e3
            ok = ratio >= 10 and p99 < 2
            lines.append(f"  - {case}: ≥ 10× the reference's req/s with p99 < 2 ms: "
                         f"{ratio:.1f}×, p99 {p99:.2f} ms → {'holds' if ok else 'does not hold'}")
        a, r = results["lossd/mse_1m_json/c2"], results["peer/mse_1m_json/c2"]
        ratio = a["rps"] / r["rps"]
        lines.append(f"  - mse_1m_json: ≥ 5× the reference's throughput (2 connections): {ratio:.1f}× "
                     f"→ {'holds' if ratio >= 5 else 'does not hold'}")
    dj = est["json"]["MBps_per_core"] or 0
    lines.append(f"  - JSON decode ≥ 400 MB/s per core: ≈ {dj:.0f} MB/s per core (CPU difference) → "
                 f"{'holds' if dj >= 400 else 'does not hold'}")
    db = est["base64"]["MBps_per_core"] or 0
    lines.append(f"  - base64 decode ≥ 2 GB/s: ≈ {db:.0f} MB/s per core (CPU difference) → "
                 f"{'holds' if db >= 2000 else 'does not hold'}")
    whole = est["base64"]["p50_s"] * 1e3
    lines.append(f"  - base64 1M-float request < 10 ms: p50 {whole:.1f} ms → {'holds' if whole < 10 else 'does not hold'}"
                 f" (the transfer floor alone is {est['base64']['floor_p50_s'] * 1e3:.1f} ms)")
    lines += ["", f"{nproc} cores; {load.describe()}; took {time.time() - started:.0f} s"]
    table = "\n".join(lines)
    print(table)
    (OUT / "http.md").write_text(table + "\n")
    (OUT / "http.json").write_text(json.dumps({"results": results, "decode": est, "kernel_1e6_s": k,
                                               "load": load.stop(), "nproc": nproc, "argv": sys.argv}, indent=1))
    print(f"\n(written to {OUT / 'http.md'} and http.json; server logs in {OUT})")


if __name__ == "__main__":
    main()
