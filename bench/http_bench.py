"""lossd against two Python services doing the same work, over loopback, with wrk: req/s, p50,
p99 and the CPU time each server spent per request (the steadier figure on a small machine where
wrk shares the cores with the servers).

The peers (bench/peer/), both FastAPI + PyTorch under `uvicorn --workers 2` with access logs off:
  peer   app.py: bodies validated by pydantic models, the way most FastAPI services are written
  fast   fast.py: the raw body through orjson, no validation, uvloop + httptools: the fastest
         Python service a team would reasonably write; the targets are stated against it

Run by `bench/http.sh` (which installs wrk and the Python packages and builds lossd); by hand:

    python bench/http_bench.py --lossd target/release/lossd [--rounds 3] [--duration 8] [--big-duration 15]

Cases (the same bytes to every service; the bodies of the issue's CPU measure, seeded):
  mse_small      mse_loss, 3×5 nested JSON input and target (6-digit floats)
  ce_small_grad  cross_entropy, 32×10 nested JSON logits, 32 class indices, grad: true
  mse_1m_json    mse_loss, 1,000,000 floats (9 digits) each for input and target, nested JSON
  mse_1m_b64     mse_loss, 1,000,000 + 1,000,000 other floats as base64 float64
  healthz        lossd's GET /healthz: the framework's floor for a small request

Small cases and healthz run with --connections connections (default 16) after a 2 s warm-up,
--rounds times (odd, default 3), every server in turn in each round; each server's figures are
from its round with the median CPU per request, the table gives the range over all rounds, and
a ratio of two servers (or of two cases) is the median of the ratios round by round (on 2
shared cores one run's CPU per request moves from run to run more than the margin of some
goals, so one run decides nothing). The 1M cases once with 1 connection (one request at a time: its latency is the single-request
latency) and once with 2 (the CPU ratios and targets use these). lossd runs with its defaults
(access log on; gRPC off so that two instances can run), and a second time with `--log warn`
for the small cases. For lossd, two more 1M runs send the same bodies with an invalid first
byte: lossd reads the whole body and answers 400 at once, so their latency is the transfer +
body collection floor; the decode estimates subtract it (and the kernel's time, when
bench/compare_torch.sh has measured it).

Server CPU per request: user + system time of the server process and all its descendants
(uvicorn's worker processes) over the run, from /proc, divided by the requests answered.
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
# Written beside the bodies: bodies made by another version of make_bodies are remade.
BODIES_VERSION = "2: Random(7) gauss, mse 3x5, ce 32x10 grad, 1M json, 1M+1M base64"

CASES = {
    "mse_small": ("mse_loss 3×5", "/v1/losses/mse_loss"),
    "ce_small_grad": ("cross_entropy 32×10 + grad", "/v1/losses/cross_entropy"),
    "mse_1m_json": ("mse_loss 1M floats, nested JSON", "/v1/losses/mse_loss"),
    "mse_1m_b64": ("mse_loss 1M + 1M floats, base64", "/v1/losses/mse_loss"),
    "healthz": ("GET /healthz", "/healthz"),
}
SERVERS = {
    "lossd": "lossd",
    "quiet": "lossd --log warn",
    "peer": "pydantic peer",
    "fast": "fast peer",
}


# ---------------------------------------------------------------------------------------------
# request bodies


def make_bodies() -> dict[str, Path]:
    """The issue's measure's bodies, byte for byte: one seeded generator, drawn in its order."""
    BODIES.mkdir(parents=True, exist_ok=True)
    names = ("mse_small", "ce_small_grad", "mse_1m_json", "mse_1m_b64")
    paths = {name: BODIES / f"{name}.json" for name in names}
    stamp = BODIES / "VERSION"
    fresh = stamp.exists() and stamp.read_text() == BODIES_VERSION
    if not fresh or not all(p.exists() for p in paths.values()):
        print(f"writing the request bodies to {BODIES}", file=sys.stderr, flush=True)
        for p in BODIES.glob("*.json"):
            p.unlink()
        rng = random.Random(7)

        def mat(n, m):
            return [[round(rng.gauss(0, 1), 6) for _ in range(m)] for _ in range(n)]

        def big():
            return [round(rng.gauss(0, 1), 9) for _ in range(N_BIG)]

        def b64(values):
            raw = struct.pack(f"<{len(values)}d", *values)
            return {"shape": [len(values)], "dtype": "float64", "base64": base64.b64encode(raw).decode()}

        def write(name, obj):
            paths[name].write_text(json.dumps(obj))

        write("mse_small", {"input": mat(3, 5), "target": mat(3, 5)})
        write("ce_small_grad", {"input": mat(32, 10), "target": [rng.randrange(10) for _ in range(32)],
                                "grad": True})
        write("mse_1m_json", {"input": big(), "target": big()})
        write("mse_1m_b64", {"input": b64([rng.gauss(0, 1) for _ in range(N_BIG)]),
                             "target": b64([rng.gauss(0, 1) for _ in range(N_BIG)])})
        stamp.write_text(BODIES_VERSION)
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


def wrk(server: Server, route: str, body: Path | None, connections: int, duration: float,
        warm_up: bool = False) -> dict:
    """One wrk run; `body` None sends GETs."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "60s",
           "-s", str(LUA), f"{server.url}{route}"]
    cpu0, ru0 = server.cpu(), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, env={**os.environ, "BODY_FILE": str(body) if body else ""},
                         capture_output=True, text=True, check=True).stdout
    cpu1, ru1 = server.cpu(), resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(ln for ln in out.splitlines() if ln.startswith("WRK_JSON "))
    r = json.loads(line[len("WRK_JSON "):])
    secs = r["duration_us"] / 1e6
    r["rps"] = r["requests"] / secs
    r["body_bytes"] = body.stat().st_size if body else 0
    r["body_MBps"] = r["rps"] * r["body_bytes"] / 1e6
    r["server_cpu_s"] = cpu1 - cpu0
    r["server_cores"] = (cpu1 - cpu0) / secs
    r["server_cpu_us_per_req"] = (cpu1 - cpu0) / max(r["requests"], 1) * 1e6
    r["wrk_cpu_s"] = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    r["connections"] = connections
    errs = sum(r["errors"].values())
    print(f"  {server.name:6} {route:26} {body.name if body else 'GET':22} c={connections:<3} "
          f"{r['rps']:10.1f} req/s  p50 {r['latency_us']['p50'] / 1e3:8.2f} ms  "
          f"p99 {r['latency_us']['p99'] / 1e3:8.2f} ms  CPU/req {fmt_us(r['server_cpu_us_per_req']):>9}  "
          f"errors {errs}{'  (warm-up)' if warm_up else ''}", file=sys.stderr, flush=True)
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


def fmt_us(us: float) -> str:
    if us >= 1e6:
        return f"{us / 1e6:.2f} s"
    return f"{us / 1e3:.3g} ms" if us >= 1000 else f"{us:.3g} µs"


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lossd", required=True, help="the lossd release binary")
    ap.add_argument("--peer-python", default=sys.executable,
                    help="Python with fastapi, uvicorn, orjson, uvloop, httptools, torch")
    ap.add_argument("--duration", type=float, default=8,
                    help="seconds per small case and round (default 8)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of the small cases; the median round counts (default 3)")
    ap.add_argument("--big-duration", type=float, default=15, help="seconds per 1M case (default 15)")
    ap.add_argument("--connections", type=int, default=16, help="connections for the small cases")
    ap.add_argument("--lossd-port", type=int, default=18180)
    ap.add_argument("--peer-port", type=int, default=18181)
    ap.add_argument("--fast-port", type=int, default=18182)
    ap.add_argument("--quiet-port", type=int, default=18183)
    ap.add_argument("--skip-peer", action="store_true", help="lossd alone (no Python peers)")
    args = ap.parse_args()
    if args.rounds < 1 or args.rounds % 2 == 0:
        ap.error("--rounds must be odd (the median is one of the rounds)")

    OUT.mkdir(parents=True, exist_ok=True)
    started = time.time()
    bodies = make_bodies()
    nproc = os.cpu_count() or 1
    servers: dict[str, Server] = {}
    load = MachineLoad().start()  # before the servers: their CPU time counts as ours

    def stop_all(*_):
        for s in servers.values():
            s.stop()

    def uvicorn(module: str, port: int, *extra: str) -> list[str]:
        # --log-level warning: no access log, as a service under load would run.
        return [args.peer_python, "-m", "uvicorn", f"{module}:app", "--host", "127.0.0.1",
                "--port", str(port), "--workers", "2", "--log-level", "warning", *extra]

    def lossd(port: int, *extra: str) -> list[str]:
        return [args.lossd, "--addr", f"127.0.0.1:{port}", "--grpc-addr", "off", *extra]

    signal.signal(signal.SIGTERM, lambda *_: (stop_all(), sys.exit(143)))
    results: dict[str, dict] = {}
    small, big = ("mse_small", "ce_small_grad"), ("mse_1m_json", "mse_1m_b64")
    try:
        servers["lossd"] = Server("lossd", lossd(args.lossd_port), args.lossd_port, {})
        servers["quiet"] = Server("quiet", lossd(args.quiet_port, "--log", "warn"), args.quiet_port, {})
        if not args.skip_peer:
            peer_dir = ROOT / "bench" / "peer"
            servers["peer"] = Server("peer", uvicorn("app", args.peer_port), args.peer_port, {}, cwd=peer_dir)
            servers["fast"] = Server("fast", uvicorn("fast", args.fast_port, "--loop", "uvloop", "--http",
                                                     "httptools"), args.fast_port, {}, cwd=peer_dir)

        # Same answers from all, once, before timing anything.
        for case in small + big:
            body = bodies[case].read_bytes()
            got = {}
            for name, s in servers.items():
                status, doc = post(s.url + CASES[case][1], body)
                if status != 200:
                    raise SystemExit(f"{name} {case}: HTTP {status}: {doc}")
                got[name] = doc["loss"]
            vals = list(got.values())
            ok = all(abs(v - vals[0]) <= 1e-9 * abs(vals[0]) for v in vals)
            print(f"check {case}: {got} {'agree' if ok else 'DISAGREE'}", file=sys.stderr, flush=True)
            if not ok:
                raise SystemExit("the services disagree")

        # Case by case, every server in turn, so that what else the machine was doing at a
        # given moment weighs on all of them alike; the small cases in rounds, so that it
        # weighs on each round alike too.
        small_plan = [(case, args.connections, args.duration, list(servers)) for case in small]
        small_plan.append(("healthz", args.connections, args.duration, ["lossd", "quiet"]))
        big_plan = [(case, conns, args.big_duration, [n for n in servers if n != "quiet"])
                    for case in big for conns in (1, 2)]
        plan = small_plan + big_plan
        rounds: dict[str, list[dict]] = {}
        for rnd in range(args.rounds):
            print(f"round {rnd + 1} of {args.rounds}", file=sys.stderr, flush=True)
            for case, conns, dur, names in small_plan:
                for name in names:
                    route, body = CASES[case][1], bodies.get(case)
                    if rnd == 0:
                        # Warm-up, not recorded: the same load for 2 s first, so that the p99 is
                        # the steady state's and not the first connections' (thread and buffer
                        # set-up), for every server alike.
                        wrk(servers[name], route, body, conns, 2, warm_up=True)
                    rounds.setdefault(f"{name}/{case}/c{conns}", []).append(
                        wrk(servers[name], route, body, conns, dur))
        for key, runs in rounds.items():
            # The round with the median CPU per request: all its figures are one real run's,
            # but for the errors, which count every round's.
            median = dict(sorted(runs, key=lambda r: r["server_cpu_us_per_req"])[len(runs) // 2])
            median["rounds_cpu_us_per_req"] = [r["server_cpu_us_per_req"] for r in runs]
            median["errors"] = {k: sum(r["errors"].get(k, 0) for r in runs) for k in median["errors"]}
            results[key] = median
        for case, conns, dur, names in big_plan:
            for name in names:
                route, body = CASES[case][1], bodies.get(case)
                results[f"{name}/{case}/c{conns}"] = wrk(servers[name], route, body, conns, dur)
        for case in ("mse_1m_json_bad", "mse_1m_b64_bad"):
            results[f"lossd/{case}/c1"] = wrk(servers["lossd"], "/v1/losses/mse_loss", bodies[case], 1,
                                              args.big_duration / 2)
    finally:
        stop_all()
        load.stop()

    has_peer = not args.skip_peer

    def res(name: str, case: str, conns: int) -> dict | None:
        return results.get(f"{name}/{case}/c{conns}")

    def cpu(r: dict) -> float:
        return r["server_cpu_us_per_req"]

    def ratio(a: dict, b: dict) -> float:
        """a's CPU per request over b's: round by round when both ran in rounds (the same
        round ran both at about the same time), the median of those."""
        ra, rb = a.get("rounds_cpu_us_per_req"), b.get("rounds_cpu_us_per_req")
        if ra and rb and len(ra) == len(rb):
            each = sorted(x / y for x, y in zip(ra, rb))
            return each[len(each) // 2]
        return cpu(a) / cpu(b)

    # ---- every run
    lines = [
        "| case | body | conns | server | req/s | p50 | p99 | CPU/req | rounds' CPU/req | pydantic peer CPU ÷ "
        "| fast peer CPU ÷ |",
        "|---|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for case, conns, _dur, names in plan:
        for name in names:
            a = res(name, case, conns)
            size = a["body_bytes"]
            body = f"{size / 1e6:.1f} MB" if size > 1e5 else f"{size} B" if size else "—"
            ratios = ["", ""]
            if has_peer and name in ("lossd", "quiet") and case != "healthz":
                ratios = [f"{ratio(res(peer, case, conns), a):.1f}×" for peer in ("peer", "fast")]
            rps = f"{a['rps']:.0f}" if a["rps"] >= 100 else f"{a['rps']:.1f}"
            each = a.get("rounds_cpu_us_per_req", [])
            spread = f"{fmt_us(min(each))} – {fmt_us(max(each))}" if len(each) > 1 else "—"
            lines.append(f"| {CASES[case][0]} | {body} | {conns} | {SERVERS[name]} | {rps} "
                         f"| {fmt_us(a['latency_us']['p50'])} | {fmt_us(a['latency_us']['p99'])} "
                         f"| {fmt_us(cpu(a))} | {spread} | {ratios[0]} | {ratios[1]} |")
    errors = {k: v["errors"] for k, v in results.items()
              if sum(v["errors"].values()) and not k.endswith("_bad/c1")}
    lines += ["", "CPU/req: user + system CPU time of the server process and its descendants (uvicorn's "
              "workers) during the run, divided by the requests answered; wrk ran on the same cores. "
              "“peer CPU ÷”: the peer's CPU per request over lossd's (or lossd --log warn's) on that row. "
              "lossd runs with its defaults (access log on, one line per request); the peers run with "
              "`--log-level warning` (no access log), as does `lossd --log warn`. "
              f"The small cases and /healthz ran in {args.rounds} rounds: each server's figures are its "
              "median round's (by CPU/req), “rounds' CPU/req” the range over all rounds, and the ratios "
              "the median of the ratios round by round; the 1M cases ran once."]
    if errors:
        lines.append(f"ERRORS (non-2xx, timeouts, socket errors): {errors}")

    # ---- the floor and the binary path
    hz, mse = res("lossd", "healthz", args.connections), res("lossd", "mse_small", args.connections)
    qhz, qmse = res("quiet", "healthz", args.connections), res("quiet", "mse_small", args.connections)
    floor = ratio(mse, hz)
    b64 = res("lossd", "mse_1m_b64", 2)
    gbps = b64["body_bytes"] / (cpu(b64) * 1e-6) / 1e9
    lines += ["",
              f"lossd GET /healthz ({args.connections} connections): {fmt_us(cpu(hz))} CPU/req; "
              f"mse_loss 3×5 costs {fmt_us(cpu(mse))}, {floor:.2f}× of it. With --log warn: "
              f"{fmt_us(cpu(qhz))} and {fmt_us(cpu(qmse))}, {ratio(qmse, qhz):.2f}×.",
              f"base64 mse_loss 1M + 1M float64 ({b64['body_bytes'] / 1e6:.1f} MB, 2 connections): "
              f"lossd {fmt_us(cpu(b64))} CPU/req, {gbps:.2f} GB/s of request bytes per core."]

    # ---- decode estimates from the single-connection runs
    j, jb = results["lossd/mse_1m_json/c1"], results["lossd/mse_1m_json_bad/c1"]
    b, bb = results["lossd/mse_1m_b64/c1"], results["lossd/mse_1m_b64_bad/c1"]
    k = kernel_estimate()
    est = {}
    for name, full, refused in (("json", j, jb), ("base64", b, bb)):
        extra = (full["latency_us"]["p50"] - refused["latency_us"]["p50"]) / 1e6
        est[name] = {
            "body_bytes": full["body_bytes"], "p50_s": full["latency_us"]["p50"] / 1e6,
            "floor_p50_s": refused["latency_us"]["p50"] / 1e6, "decode_and_kernel_s": extra,
            "MBps_lower_bound": full["body_bytes"] / extra / 1e6 if extra > 0 else None,
            "MBps_kernel_subtracted": full["body_bytes"] / (extra - k) / 1e6 if k and extra > k else None,
        }
        # Per core: the server's CPU time per request, whole minus floor (large decodes run on
        # several threads, so the wall-clock difference is not a per-core figure).
        c = (cpu(full) - cpu(refused)) / 1e6
        est[name]["decode_cpu_s"] = c
        est[name]["MBps_per_core"] = full["body_bytes"] / c / 1e6 if c > 0 else None
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
    lines.append("kernel (mse_loss f64 forward, 1e6 elements, estimated as divan's 1e7 median / 10): "
                 + (f"{k * 1e3:.2f} ms" if k else "not available (run bench/compare_torch.sh first)"))

    # ---- targets: server CPU per request, lossd with its defaults against the fast peer
    def clean(*runs) -> bool:
        return all(r and not sum(r["errors"].values()) for r in runs)

    targets = []
    for case, conns, goal in (("mse_small", args.connections, 10), ("ce_small_grad", args.connections, 12),
                              ("mse_1m_json", 2, 8)):
        a, f = res("lossd", case, conns), res("fast", case, conns)
        r = ratio(f, a) if f else None
        targets.append((f"{CASES[case][0]}: fast peer's CPU/req ÷ lossd's ({conns} connections)",
                        f"{r:.1f}×" if r else "not measured", f"≥ {goal}×",
                        None if r is None else r >= goal and clean(a, f)))
    targets.append(("mse_loss 3×5: lossd's CPU/req ÷ its GET /healthz's", f"{floor:.2f}×", "≤ 1.5×",
                    floor <= 1.5 and clean(mse, hz)))
    targets.append(("base64 mse_loss 1M + 1M: request bytes per core of lossd's CPU",
                    f"{gbps:.2f} GB/s", "≥ 3 GB/s", gbps >= 3 and clean(b64)))
    lines += ["", "Targets (server CPU per request; lossd with its defaults):", "",
              "| target | measured | goal | |", "|---|--:|--:|---|"]
    verdict = {True: "held", False: "NOT held", None: "—"}
    lines += [f"| {t} | {m} | {g} | {verdict[ok]} |" for t, m, g, ok in targets]
    lines += ["", f"{nproc} cores; {load.describe()}; took {time.time() - started:.0f} s"]
    table = "\n".join(lines)
    print(table)
    (OUT / "http.md").write_text(table + "\n")
    (OUT / "http.json").write_text(json.dumps({
        "results": results, "decode": est, "kernel_1e6_s": k,
        "targets": [{"target": t, "measured": m, "goal": g, "held": ok} for t, m, g, ok in targets],
        "load": load.stop(), "nproc": nproc, "argv": sys.argv}, indent=1))
    print(f"\n(written to {OUT / 'http.md'} and http.json; server logs in {OUT})")


if __name__ == "__main__":
    main()
