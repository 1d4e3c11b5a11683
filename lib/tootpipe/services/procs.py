"""Processes and ports of the servers the project starts: free loopback ports, readiness, and stopping only a
process that is verifiably the one that was started.

Guarantees: :func:`stop` signals a pid only when the process behind it still has the start time and command line
recorded by :func:`identity` when it was started; a pid reused by another program is left alone.
"""
from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

from tootpipe.core.errors import ServiceError

__all__ = ["free_port", "port_free", "wait_port", "alive", "identity", "is_same", "stop"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no obstacle
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_port(port: int, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    tail = log.read_text()[-2000:] if log and log.exists() else ""
    raise ServiceError(f"{what} did not open port {port} within {timeout:.0f} s. {tail}")


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _start_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22: start time after boot, in ticks
    except (OSError, IndexError, ValueError):
        return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def identity(pid: int, marker: str) -> dict:
    """What identifies a process we started: its pid, start time and a word of its command line."""
    return {"pid": pid, "started": _start_ticks(pid), "marker": marker}


def is_same(entry: dict, marker: str | None = None) -> bool:
    """Whether the process recorded in `entry` is still the one we started (not a reused pid): same start time and
    `marker` in its command line (an entry written by an older tootpipe has no start time: the marker decides)."""
    pid = entry.get("pid")
    marker = entry.get("marker") or marker
    if not alive(pid) or not marker or marker not in _cmdline(pid):
        return False
    return entry.get("started") is None or _start_ticks(pid) == entry["started"]


def stop(entry: dict, grace: float = 10, marker: str | None = None) -> bool:
    """SIGTERM, then SIGKILL after `grace` seconds, to the recorded process if it is verifiably ours; returns
    whether it was signalled."""
    if not is_same(entry, marker):
        return False
    pid = entry["pid"]
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
        while alive(pid):
            time.sleep(0.05)
    return True
