"""When the stream has recovered from a fault: it has committed everything the topic held at the fault (read from
its ledger). A module of its own because importing bench/chaos.py points TOOTPIPE_STATE_DIR at the soak's folder:
a test importing this one keeps its own state."""
from __future__ import annotations

import threading
import time

import psycopg2

from tootpipe.core.errors import DatabaseUnavailable

__all__ = ["caught_up", "RecoveryWatch"]


def caught_up(sink, ends: dict[int, int]) -> bool:
    """Whether the stream's ledger has applied everything up to `ends` (False while PostgreSQL is down); `sink`: a
    PostgresSink (only its `committed_ends` is read)."""
    try:
        done = sink.committed_ends()
    except (DatabaseUnavailable, psycopg2.Error):  # PostgreSQL may be down or going: that is the point
        return False
    return all(done.get(p, 0) >= o for p, o in ends.items())


class RecoveryWatch(threading.Thread):
    """Whether the stream has committed what the topic held at each fault, sampled every 0.5 s apart from the
    soak's loop: an injection blocks that loop (a stalled instance for three watchdog periods, an outage for its
    length), and a fault before it would otherwise be seen recovered only when the injection returns."""

    def __init__(self, sink, faults: list[dict]) -> None:
        super().__init__(daemon=True)
        self.sink, self.faults, self.done = sink, faults, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.check()
            self.done.wait(0.5)

    def check(self) -> None:
        for f in [f for f in list(self.faults) if "recovered_s" not in f]:
            if caught_up(self.sink, f["ends"]):
                f["recovered_s"] = round(time.monotonic() - f["t0"], 1)

    def stop(self) -> None:
        self.done.set()
        self.join(60)
        self.check()  # the soak ends caught up with the topic: a fault not sampled since is recovered now
