"""What the load scripts read about a server process, and a free loopback port."""

import socket


def status_bytes(pid, field):
    """A size field of /proc/PID/status (VmRSS, VmHWM, ...) in bytes; 0 when absent."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def rss(pid):
    """Resident size of `pid` in bytes."""
    return status_bytes(pid, "VmRSS")


def hwm(pid):
    """Peak resident size of `pid` in bytes."""
    return status_bytes(pid, "VmHWM")


def free_port():
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
