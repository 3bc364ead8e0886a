"""lossd's kernels against PyTorch CPU, on the same shapes: one table.

Run by `bench/compare_torch.sh` (which makes the Python environment); by hand:

    python bench/compare_torch.py [--filter REGEX] [--sizes 1e5,1e7] [--divan-args '...']

1. Asks the Rust benchmark for its shapes (`LOSSD_BENCH_SHAPES=1`, kernels/benches/losses.rs),
   so both sides use the same ones.
2. Runs `cargo bench -p lossd-kernels --bench losses` and reads divan's median column.
3. Times `torch.nn.functional` on tensors of those shapes, values drawn from the same
   distributions, with `torch.set_num_threads(1)` and then with every core: the median of
   repeated calls after a warm-up call (forward under `torch.no_grad()`; forward+grad is the
   forward plus `torch.autograd.grad` for the arguments lossd differentiates).
4. Prints the table and writes it, with the raw numbers, to target/bench/.

Both sides report medians (divan: of its samples; PyTorch: of single timed calls); see
BENCHMARKS.md for what limits them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench_load import MachineLoad

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "target" / "bench"

# ---------------------------------------------------------------------------------------------
# the Rust side


def cargo_env() -> dict:
    return dict(os.environ)


def rust_shapes() -> list[dict]:
    """The benchmark's shape list: one dict per (loss, size)."""
    out = subprocess.run(
        ["cargo", "bench", "-q", "-p", "lossd-kernels", "--bench", "losses"],
        cwd=ROOT, env={**cargo_env(), "LOSSD_BENCH_SHAPES": "1"},
        check=True, capture_output=True, text=True,
    ).stdout
    shapes = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 3 or "=" not in parts[2]:
            continue
        d = {"loss": parts[0], "size": parts[1]}
        for kv in parts[2:]:
            k, v = kv.split("=")
            d[k] = v if k == "layout" else int(v)
        shapes.append(d)
    return shapes


UNITS = {"ps": 1e-12, "ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def parse_time(cell: str) -> float | None:
    m = re.search(r"([0-9.]+)\s*(ps|ns|µs|us|ms|s)\b", cell)
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def parse_divan(text: str) -> dict:
    """divan's tree → {(loss, pass, dtype, size): {median, fastest, samples, iters}}.

    Lines look like `│  │  │  ├─ 1e5    1.2 µs │ 3.4 µs │ 1.5 µs │ 1.6 µs │ 100 │ 800`; the
    depth of a name is the width of the tree prefix before it, in steps of 3 characters.
    """
    results = {}
    path: list[str] = []
    for line in text.splitlines():
        m = re.match(r"^([\s│├╰─┬]*)([A-Za-z0-9_.]+)(.*)$", line)
        if not m or "fastest" in line:
            continue
        depth = len(m.group(1)) // 3
        name = m.group(2)
        path = path[: max(depth - 1, 0)] + [name]
        rest = m.group(3).split("│")
        if len(rest) < 6:
            continue
        fastest = parse_time(rest[0])
        if fastest is None:
            continue  # a group line
        median = parse_time(rest[2])
        if len(path) >= 4:
            key = tuple(path[-4:])
            results[key] = {
                "fastest": fastest,
                "median": median,
                "samples": int(rest[4].strip() or 0),
                "iters": int(rest[5].strip() or 0),
            }
    return results


def run_rust(losses, passes, dtypes, sizes, divan_args: list[str]) -> dict:
    """Runs exactly the selected benchmarks: divan matches `losses::loss::pass::dtype::size`."""
    alt = lambda xs: "(" + "|".join(sorted(set(xs))) + ")"  # noqa: E731
    filt = f"(^|::){alt(losses)}::{alt(passes)}::{alt(dtypes)}::{alt(sizes)}$"
    cmd = ["cargo", "bench", "-p", "lossd-kernels", "--bench", "losses", "--", "--color", "never", filt]
    cmd += divan_args
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=cargo_env(), capture_output=True, text=True)
    (OUT / "divan-losses.txt").write_text(proc.stdout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-5000:])
        raise SystemExit(f"cargo bench failed ({proc.returncode})")
    return parse_divan(proc.stdout)


# ---------------------------------------------------------------------------------------------
# the PyTorch side: the same shapes and distributions as kernels/benches/losses.rs


def uniform(g, shape, lo, hi, dtype):
    return torch.rand(shape, generator=g, dtype=torch.float64).mul_(hi - lo).add_(lo).to(dtype)


def signs(g, shape, dtype):
    return (torch.randint(0, 2, shape, generator=g) * 2 - 1).to(dtype)


def make_case(s: dict, dtype: torch.dtype):
    """(function of the float tensors, float tensors, indices of the differentiated ones)."""
    name, n, c, d, t, S = s["loss"], s["n"], s["c"], s["d"], s["t"], s["s"]
    g = torch.Generator().manual_seed(0x5EED)
    u = lambda shape, lo, hi: uniform(g, shape, lo, hi, dtype)  # noqa: E731
    idx = lambda n, c: torch.randint(0, c, (n,), generator=g)  # noqa: E731
    if name in ("l1_loss", "mse_loss"):
        f = getattr(F, name)
        return f, [u((n,), -2, 2), u((n,), -2, 2)], [0, 1]
    if name == "smooth_l1_loss":
        return (lambda x, y: F.smooth_l1_loss(x, y, beta=1.0)), [u((n,), -2, 2), u((n,), -2, 2)], [0, 1]
    if name == "huber_loss":
        return (lambda x, y: F.huber_loss(x, y, delta=1.0)), [u((n,), -2, 2), u((n,), -2, 2)], [0, 1]
    if name == "cross_entropy":
        i = idx(n, c)
        return (lambda x: F.cross_entropy(x, i)), [u((n, c), -4, 4)], [0]
    if name == "nll_loss":
        i = idx(n, c)
        return (lambda x: F.nll_loss(x, i)), [u((n, c), -8, 0)], [0]
    if name == "binary_cross_entropy":
        return F.binary_cross_entropy, [u((n,), 0.01, 0.99), u((n,), 0, 1)], [0, 1]
    if name == "binary_cross_entropy_with_logits":
        return F.binary_cross_entropy_with_logits, [u((n,), -4, 4), u((n,), 0, 1)], [0, 1]
    if name == "multi_margin_loss":
        i = idx(n, c)
        return (lambda x: F.multi_margin_loss(x, i, p=1, margin=1.0)), [u((n, c), -2, 2)], [0]
    if name == "multilabel_margin_loss":
        k = torch.randint(0, c, (n,), generator=g)
        tgt = torch.full((n, c), -1, dtype=torch.int64)
        tgt[:, 0], tgt[:, 1], tgt[:, 2] = k, (k + 3) % c, (k + 7) % c
        return (lambda x: F.multilabel_margin_loss(x, tgt)), [u((n, c), -2, 2)], [0]
    if name == "multilabel_soft_margin_loss":
        y = torch.randint(0, 2, (n, c), generator=g).to(dtype)
        return F.multilabel_soft_margin_loss, [u((n, c), -2, 2), y], [0, 1]
    if name == "soft_margin_loss":
        return F.soft_margin_loss, [u((n,), -2, 2), signs(g, (n,), dtype)], [0]
    if name == "hinge_embedding_loss":
        return (lambda x, y: F.hinge_embedding_loss(x, y, margin=1.0)), [u((n,), -2, 2), signs(g, (n,), dtype)], [0]
    if name == "linear_cross_entropy":
        i = idx(n, c)
        b = 1 / d**0.5
        return (lambda x, w: F.linear_cross_entropy(x, w, i)), [u((n, d), -1, 1), u((c, d), -b, b)], [0, 1]
    if name == "kl_div":
        x = torch.rand((n,), generator=g, dtype=torch.float64).mul_(0.99).add_(0.01).log_().to(dtype)
        return (lambda x, y: F.kl_div(x, y, reduction="batchmean")), [x, u((n,), 0, 1)], [0, 1]
    if name == "poisson_nll_loss":
        y = torch.randint(0, 10, (n,), generator=g).to(dtype)
        return (lambda x, y: F.poisson_nll_loss(x, y, log_input=True, full=False, eps=1e-8)), [u((n,), -2, 2), y], [0]
    if name == "gaussian_nll_loss":
        return (
            (lambda x, y, v: F.gaussian_nll_loss(x, y, v, full=False, eps=1e-6)),
            [u((n,), -2, 2), u((n,), -2, 2), u((n,), 0.1, 2.0)],
            [0, 1, 2],
        )
    if name == "ctc_loss":
        lp = torch.log_softmax(uniform(g, (t, n, c), -2, 2, torch.float64), dim=-1).to(dtype)
        tg = torch.randint(1, c, (n, S), generator=g)
        il = torch.full((n,), t, dtype=torch.int64)
        tl = torch.full((n,), S, dtype=torch.int64)
        return (lambda lp: F.ctc_loss(lp, tg, il, tl, blank=0, zero_infinity=False)), [lp], [0]
    if name == "margin_ranking_loss":
        return (
            (lambda a, b, y: F.margin_ranking_loss(a, b, y, margin=0.0)),
            [u((n,), -2, 2), u((n,), -2, 2), signs(g, (n,), dtype)],
            [0, 1, 2],
        )
    if name == "cosine_embedding_loss":
        return (
            (lambda a, b, y: F.cosine_embedding_loss(a, b, y, margin=0.0)),
            [u((n, d), -2, 2), u((n, d), -2, 2), signs(g, (n,), dtype)],
            [0, 1],
        )
    if name == "triplet_margin_loss":
        return (
            (lambda a, p, q: F.triplet_margin_loss(a, p, q, margin=1.0, p=2, eps=1e-6)),
            [u((n, d), -2, 2) for _ in range(3)],
            [0, 1, 2],
        )
    if name == "triplet_margin_with_distance_loss":
        return (
            (lambda a, p, q: F.triplet_margin_with_distance_loss(a, p, q, margin=1.0)),
            [u((n, d), -2, 2) for _ in range(3)],
            [0, 1, 2],
        )
    raise KeyError(name)


def time_calls(fn, budget: float, max_reps: int = 200) -> tuple[float, int]:
    """Median seconds of `fn()` after one warm-up call: at least 3 calls (1 if the warm-up
    alone took over 2 s), then more until `budget` seconds or `max_reps` calls."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    min_reps = 1 if first > 2.0 else 3
    end = time.perf_counter() + budget
    while len(times) < min_reps or (time.perf_counter() < end and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], len(times)


def run_torch(shapes: list[dict], dtypes, passes, threads: int, budget: float) -> dict:
    torch.set_num_threads(threads)
    results = {}
    for s in shapes:
        for dname in dtypes:
            dtype = {"f32": torch.float32, "f64": torch.float64}[dname]
            f, tensors, diff = make_case(s, dtype)
            for p in passes:
                if p == "forward":
                    def call():
                        with torch.no_grad():
                            return f(*tensors)
                else:
                    leaves = [x.detach().requires_grad_(i in diff) for i, x in enumerate(tensors)]
                    wrt = [leaves[i] for i in diff]

                    def call():
                        loss = f(*leaves)
                        return torch.autograd.grad(loss, wrt)

                med, reps = time_calls(call, budget)
                results[(s["loss"], p, dname, s["size"])] = {"median": med, "reps": reps}
                print(f"  torch {threads}t {s['loss']} {s['size']} {dname} {p}: {fmt_t(med)}",
                      file=sys.stderr, flush=True)
            del f, tensors
    return results


# ---------------------------------------------------------------------------------------------
# the table


def fmt_t(x: float | None) -> str:
    if x is None:
        return "—"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x * 1e9:.3g} ns"


def shape_str(s: dict) -> str:
    n, c, d, t, S = s["n"], s["c"], s["d"], s["t"], s["s"]
    return {
        "flat": f"({n},)",
        "classes": f"({n}, {c})",
        "embedding": f"({n}, {d})",
        "linear": f"({n}, {d})·({c}, {d})ᵀ",
        "ctc": f"T={t} N={n} C={c} S={S}",
    }[s["layout"]]


def ratio_matrix(rows: list[dict], sizes, dtypes, passes) -> list[str]:
    """lossd / torch-1-thread per loss: one row per loss, one column per size·dtype·pass."""
    cols = [(s, d, p) for s in sizes if s != "1e3" for d in dtypes for p in passes]
    if not cols:
        return []
    short = {"forward": "fwd", "forward_grad": "fwd+grad"}
    idx = {(r["loss"], r["size"], r["dtype"], r["pass"]): r for r in rows}
    out = ["| loss | " + " | ".join(f"{s} {d} {short[p]}" for s, d, p in cols) + " |",
           "|---|" + "--:|" * len(cols)]
    for loss in dict.fromkeys(r["loss"] for r in rows):
        cells = []
        for s, d, p in cols:
            x = idx.get((loss, s, d, p), {}).get("ratio")
            cells.append("—" if x is None else f"**{x:.2f}**" if x > 1 else f"{x:.2f}")
        out.append(f"| {loss} | " + " | ".join(cells) + " |")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--filter", help="regex on the loss name (also passed to divan)")
    ap.add_argument("--sizes", default="1e3,1e5,1e7")
    ap.add_argument("--dtypes", default="f32,f64")
    ap.add_argument("--passes", default="forward,forward_grad")
    ap.add_argument("--divan-args", default="", help="extra divan options, e.g. '--max-time 5'")
    ap.add_argument("--torch-budget", type=float, default=0.5, help="seconds per torch case (default 0.5)")
    ap.add_argument("--skip-rust", action="store_true")
    ap.add_argument("--skip-torch", action="store_true")
    args = ap.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    sizes = args.sizes.split(",")
    dtypes = args.dtypes.split(",")
    passes = args.passes.split(",")
    nproc = os.cpu_count() or 1
    started = time.time()

    shapes = [
        s for s in rust_shapes()
        if s["size"] in sizes and (not args.filter or re.search(args.filter, s["loss"]))
    ]
    if not shapes:
        raise SystemExit("no benchmark matches --filter/--sizes")

    load = MachineLoad().start()
    rust = {}
    t_rust = time.time()
    if not args.skip_rust:
        losses = [s["loss"] for s in shapes]
        rust = run_rust(losses, passes, dtypes, sizes, args.divan_args.split())
    t_rust = time.time() - t_rust
    t_torch = time.time()
    torch1 = torchn = {}
    if not args.skip_torch:
        torch1 = run_torch(shapes, dtypes, passes, 1, args.torch_budget)
        torchn = run_torch(shapes, dtypes, passes, nproc, args.torch_budget) if nproc > 1 else torch1
    t_torch = time.time() - t_torch
    load.stop()

    rows = []
    for s in shapes:
        for dname in dtypes:
            for p in passes:
                key = (s["loss"], p, dname, s["size"])
                r, a, b = rust.get(key), torch1.get(key), torchn.get(key)
                lossd = r["median"] if r else None
                t1 = a["median"] if a else None
                rows.append({
                    "loss": s["loss"], "size": s["size"], "shape": shape_str(s),
                    "elements": s["elements"], "dtype": dname, "pass": p,
                    "lossd": lossd, "lossd_samples": r["samples"] if r else None,
                    "torch_1t": t1, "torch_all": b["median"] if b else None,
                    "ratio": lossd / t1 if lossd and t1 else None,
                })

    head = f"| loss | size | shape | dtype | pass | lossd | torch 1 thread | torch {nproc} threads | lossd / torch-1t |"
    lines = [head, "|---|---|---|---|---|--:|--:|--:|--:|"]
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "—"
        if r["ratio"] and r["ratio"] > 1 and r["size"] != "1e3":
            ratio = f"**{ratio}**"
        pas = "fwd" if r["pass"] == "forward" else "fwd+grad"
        lines.append(
            f"| {r['loss']} | {r['size']} | {r['shape']} | {r['dtype']} | {pas} | {fmt_t(r['lossd'])} "
            f"| {fmt_t(r['torch_1t'])} | {fmt_t(r['torch_all'])} | {ratio} |"
        )
    slower = [r for r in rows if r["ratio"] and r["ratio"] > 1 and r["size"] != "1e3"]
    compared = [r for r in rows if r["ratio"] and r["size"] != "1e3"]
    info = ["", "lossd time / PyTorch 1-thread time (bold: lossd slower):", ""]
    info += ratio_matrix(rows, sizes, dtypes, passes)
    info += [
        "",
        f"Target 'no slower than PyTorch 1-thread at 1e5 elements and up': "
        f"{len(compared) - len(slower)} of {len(compared)} cases hold; slower (ratio > 1, bold above):",
    ]
    info += [f"  - {r['loss']} {r['size']} {r['dtype']} {r['pass']}: {r['ratio']:.2f}×" for r in slower] or ["  (none)"]
    info += [
        "",
        f"torch {torch.__version__}, {nproc} cores; {load.describe()}",
        f"time: rust benchmarks {t_rust:.0f} s, torch {t_torch:.0f} s, total {time.time() - started:.0f} s",
    ]
    table = "\n".join(lines + info)
    print(table)
    (OUT / "compare_torch.md").write_text(table + "\n")
    (OUT / "compare_torch.json").write_text(json.dumps({
        "rows": rows, "load": load.stop(), "torch": torch.__version__, "nproc": nproc,
        "seconds": {"rust": t_rust, "torch": t_torch}, "argv": sys.argv,
    }, indent=1))
    print(f"\n(written to {OUT / 'compare_torch.md'} and compare_torch.json; divan's output in divan-losses.txt)")


if __name__ == "__main__":
    main()
