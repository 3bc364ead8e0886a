"""How busy the machine was while a benchmark ran, for bench/compare_torch.py and
bench/http_bench.py.

Two figures:
- the 1-minute load average, sampled every few seconds (it counts the benchmark's own threads
  too: a benchmark that keeps both cores busy makes it ~2 on its own);
- the CPU time *other* processes used: busy time of the whole machine (/proc/stat) minus the
  CPU time of this process and of every descendant it has waited for (RUSAGE_SELF +
  RUSAGE_CHILDREN; so servers must have been stopped and waited for before `stop()`), in
  cores: 0 on a quiet machine, up to the core count when something else saturates it.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from pathlib import Path


def _busy_seconds() -> float:
    # cpu  user nice system idle iowait irq softirq steal guest guest_nice
    f = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = f[0] + f[1] + f[2] + f[5] + f[6] + f[7]
    return busy / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class MachineLoad:
    def __init__(self, every: float = 5.0):
        self.samples: list[float] = []
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.result: dict | None = None

    def _run(self):
        while not self._stop.is_set():
            self.samples.append(float(Path("/proc/loadavg").read_text().split()[0]))
            self._stop.wait(self.every)

    def start(self) -> "MachineLoad":
        self._t0, self._busy0, self._own0 = time.time(), _busy_seconds(), _own_seconds()
        self._thread.start()
        return self

    def stop(self) -> dict:
        if self.result is None:
            self._stop.set()
            self._thread.join()
            wall = time.time() - self._t0
            busy, own = _busy_seconds() - self._busy0, _own_seconds() - self._own0
            s = self.samples or [float("nan")]
            self.result = {
                "load_min": min(s), "load_mean": sum(s) / len(s), "load_max": max(s),
                "load_samples": len(s), "wall_s": wall,
                "machine_busy_cores": busy / wall, "own_cores": own / wall,
                "other_cores": max(busy - own, 0.0) / wall, "nproc": os.cpu_count(),
            }
        return self.result

    def describe(self) -> str:
        r = self.stop()
        return (f"load average (1 min) during the run: min {r['load_min']:.2f}, mean {r['load_mean']:.2f}, "
                f"max {r['load_max']:.2f} ({r['load_samples']} samples); CPU used by other processes: "
                f"{r['other_cores']:.2f} of {r['nproc']} cores on average (this benchmark: {r['own_cores']:.2f})")
