"""How the project's JVMs compile: Spark's driver and executors, and the embedded Kafka broker.

HotSpot's default (tiered: C1 at once, C2 for the code that turns hot) pays back on long runs: a stream draining a
backlog, a backfill of a million toots. A run of many short jobs on small data never pays C2's compile work back,
and on 2 cores that work competes with the jobs: ``TOOTPIPE_JIT=c1`` stops at C1. The test suite sets it (its
JVMs, 2 workers on 2 cores: 30 % less CPU, 623 -> 459 s, docs/testing.md); nothing else does.

Guarantees: unset or ``tiered`` gives HotSpot's default (no option); ``c1`` gives ``-XX:TieredStopAtLevel=1``; any
other value is a ValueError naming the variable and its values. Neither changes what a program computes.
"""
from __future__ import annotations

import os

__all__ = ["JIT_ENV", "jit_options"]

JIT_ENV = "TOOTPIPE_JIT"
_MODES = {"tiered": [], "c1": ["-XX:TieredStopAtLevel=1"]}


def jit_options() -> list[str]:
    """The JIT options of ``$TOOTPIPE_JIT`` for a JVM's command line."""
    mode = os.environ.get(JIT_ENV, "").strip() or "tiered"
    if mode not in _MODES:
        raise ValueError(f"{JIT_ENV}={mode!r}: use one of {', '.join(_MODES)} (unset: tiered, HotSpot's default)")
    return list(_MODES[mode])
