"""One writer at a time, per kind: PostgreSQL session advisory locks, each held by a connection of its own for as
long as its writer runs.

Kinds: ``batch`` (backfill, clean, analytics, scoring: one per database), ``stream`` (one query per checkpoint) and
``ingest`` (one producer per topic and source).

Guarantees: a lock is held by one process at a time; the server releases it when the holder's connection ends, so a
writer that was killed (kill -9, a crash, a reboot) leaves no lock behind and the next one takes it over at once. A
second writer waits up to `wait_s` seconds, then refuses with :class:`WriterBusy` naming the holder (its command,
host and pid, from the holder's `application_name`); it has written nothing. Within one process a lock is
re-entrant (a step inside a run that holds it goes on). Reading who holds a lock takes nothing.
"""
from __future__ import annotations

import os
import re
import socket
import sys
import threading
import time
import zlib
from contextlib import contextmanager
from typing import Callable, Iterator

from tootpipe.core.errors import WriterBusy
from tootpipe.postgres.db import connect, query_df

__all__ = ["KINDS", "acquire", "writer_lock", "held_here", "holder", "who_am_i"]

KINDS = {"batch": 4250, "stream": 4251, "ingest": 4252}  # the advisory lock's first key, per kind
_held: dict[tuple[str, str, str], list] = {}  # (url, kind, key) -> [connection, takers], in this process
_guard = threading.Lock()


def _key(key: str) -> int:
    """The lock's second key: a stable non-negative 31-bit hash of `key` (a checkpoint path, a topic)."""
    return zlib.crc32(key.encode()) & 0x7FFFFFFF


def who_am_i() -> str:
    """This process as a lock holder is shown: pid, host, then its command and subcommand (plain words only: an
    argument may hold a URL with its password)."""
    argv = sys.argv or ["python"]
    words = [os.path.basename(argv[0]) or "python", *[a for a in argv[1:] if re.fullmatch(r"[a-z][a-z_-]*", a)][:2]]
    return f"pid {os.getpid()} on {socket.gethostname()[:24]}: {' '.join(words)}"


def holder(url: str, kind: str, key: str = "") -> str | None:
    """Who holds the `kind` lock of `key` now ("tootpipe batch lock: pid 123 on host: run_all.py, since ..."), or
    None when nobody does."""
    rows = query_df(url, "SELECT a.application_name AS name, a.backend_start FROM pg_locks l JOIN pg_stat_activity a "
                         "USING (pid) WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND "
                         "l.objid = %s AND l.objsubid = 2", (KINDS[kind], _key(key)))
    if rows.empty:
        return None
    return f"{rows.name[0] or 'a process'}, since {rows.backend_start[0]:%Y-%m-%d %H:%M:%S %Z}"


def acquire(url: str, kind: str, key: str = "", wait_s: float = 0.0) -> Callable[[], None]:
    """Take the `kind` lock of `key` in the database at `url` (see the module's guarantees); returns the function
    that gives it back (the lock is released when every taker in this process gave it back)."""
    if kind not in KINDS:
        raise ValueError(f"unknown lock kind {kind!r}: one of {sorted(KINDS)}")
    ident = (url, kind, key)
    with _guard:
        if ident in _held:
            _held[ident][1] += 1
            return _releaser(ident)
    conn = _connect_and_wait(url, kind, key, wait_s)
    with _guard:
        _held[ident] = [conn, 1]
    return _releaser(ident)


def _releaser(ident: tuple[str, str, str]) -> Callable[[], None]:
    done = []

    def release() -> None:
        if done:
            return  # each taker gives back once
        done.append(True)
        with _guard:
            entry = _held[ident]
            entry[1] -= 1
            if entry[1]:
                return
            del _held[ident]
        entry[0].close()  # the session ends: the server releases the lock
    return release


def held_here(url: str, kind: str, key: str = "") -> bool:
    """Whether this process holds the `kind` lock of `key`."""
    with _guard:
        return (url, kind, key) in _held


@contextmanager
def writer_lock(url: str, kind: str, key: str = "", wait_s: float = 0.0) -> Iterator[None]:
    """Hold the `kind` lock of `key` while the block runs (:func:`acquire`)."""
    release = acquire(url, kind, key, wait_s)
    try:
        yield
    finally:
        release()


def _connect_and_wait(url: str, kind: str, key: str, wait_s: float):
    conn = connect(url, application_name=f"tootpipe {kind} lock: {who_am_i()}")
    conn.autocommit = True
    deadline = time.monotonic() + wait_s
    try:
        while True:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s, %s)", (KINDS[kind], _key(key)))
                if cur.fetchone()[0]:
                    return conn
            if time.monotonic() >= deadline:
                who = holder(url, kind, key) or "a process that has just ended"
                what = f" of {key}" if key else ""
                raise WriterBusy(f"another {kind} writer{what} is running ({who}); waited {wait_s:.0f} s. Let it "
                                 f"finish, or stop it, and run this again: nothing was written")
            time.sleep(min(0.5, max(0.05, deadline - time.monotonic())))
    except BaseException:
        conn.close()
        raise
