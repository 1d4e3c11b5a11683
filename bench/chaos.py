"""Chaos soak: ingest and the stream run as `make live` runs them (two processes) while faults are injected at
random, then the end state is checked against an independent expectation.

    python bench/chaos.py                      # 4 minutes, a fault every ~20 s, 40,000 toots at 200/s
    python bench/chaos.py --minutes 10 --every 30 --n 60000   # a replayed sample
    python bench/chaos.py --source live --minutes 10 --every 30  # a live instance (bench/live_feed.py): the soak
                                                                 # of bench/results/chaos.json

Faults: kill -9 of the stream's driver, of ingest, of both at once, PostgreSQL stopped without a clean shutdown
(started again at once, or after a 20 s outage), kill -9 of the broker (started again at once, or after a 30 s
outage: the producer keeps every record and blocks the feed meanwhile), hostile records written into the topic by
another producer (oversized, nested 2,000 deep, invalid UTF-8, NUL, wrong types, no id), each of which must end as
one error row; what died is started again (a supervisor, as systemd would). With `--source live` ingest streams
from a fake instance posting at `--rate` (stream and REST gap-fill, edits and deletes), with one more fault: the
instance's stream stalls (silent, no heartbeat, while its timeline grows), and every 10 s of calm a burst of
hostile events on its stream (a line over the bound, 2,000 deep, wrong types, NULs, a cut event), each of which
must end as a dead letter, none stored, none stopping ingest.
Everything runs in a state folder of its own (its own broker and PostgreSQL): the user's services are never
touched. At the end: every toot stored once (no loss, no duplicate), the exactly-once invariants (ledger = topic,
windows = recount), and per fault the seconds until the stream had committed everything the topic held when the
fault struck. Prints a table and writes bench/results/chaos.json (the live source) or chaos-replay.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "bench"))
os.environ["TOOTPIPE_STATE_DIR"] = tempfile.mkdtemp(prefix="chaos-", dir=ROOT / ".tootpipe")  # before tootpipe

import psycopg2  # noqa: E402
import yaml  # noqa: E402
from common import write  # noqa: E402
from ingest import write_replay  # noqa: E402
from live_feed import FIRST_ID, LiveFeed  # noqa: E402
from recovery import RecoveryWatch, caught_up  # noqa: E402

from tootpipe.core import config  # noqa: E402
from tootpipe.core.errors import DatabaseUnavailable  # noqa: E402
from tootpipe.ingest.sample import expected_posts, generate  # noqa: E402
from tootpipe.kafka import end_offsets  # noqa: E402
from tootpipe.postgres import db  # noqa: E402
from tootpipe.report import checks  # noqa: E402
from tootpipe.services import embedded as services  # noqa: E402
from tootpipe.stream.query import PostgresSink, checkpoint_path  # noqa: E402

STATE = Path(os.environ["TOOTPIPE_STATE_DIR"])
LIVE_FAULTS = ("stalled instance",)
HOSTILE_EVERY_S = 10  # a burst of hostile events on the live stream, when no fault is under way
FAULTS = ("kill -9 stream", "kill -9 ingest", "kill -9 ingest and stream", "PostgreSQL crash",
          "PostgreSQL outage 20 s", "kill -9 broker", "broker outage 30 s", "hostile records")


def hostile_records(n: int) -> list[bytes]:
    """What another producer of the topic may write: none of it is a toot the stream may store."""
    good = {"v": 1, "event": "update", "uri": f"https://hostile.example/s/{n}", "id": str(n),
            "instance": "hostile.example", "username": "h", "content": "x", "created_at": "2026-11-26T12:00:00Z"}
    nested = b'{"v": 1, "event": "update", "a": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    return [json.dumps(good | {"content": "y" * 900_000, "created_at": True}).encode(),  # oversized, wrong type
            nested, b'{"v": 1, "event": "update", "uri": "https://hostile.example/\xff", "text": "\xc3\x28"}',
            json.dumps(good | {"id": None}).encode(),
            json.dumps(good | {"hashtags": 5, "created_at": [1]}).encode(), b"\x00" * 64, b"not json at all"]


class Supervised:
    """A tootpipe command started again whenever it dies, until it exits 0 (or is stopped)."""

    def __init__(self, name: str, args: list[str], env: dict | None = None) -> None:
        self.name, self.args, self.starts, self.proc, self.done, self.env = name, args, 0, None, False, env
        self.log = open(STATE / f"{name}.log", "ab")

    def check(self) -> None:
        if self.done or (self.proc is not None and self.proc.poll() is None):
            return
        if self.proc is not None and self.proc.returncode == 0:
            self.done = True
            return
        self.starts += 1
        self.proc = subprocess.Popen([sys.executable, "-m", "tootpipe.cli", *self.args], cwd=ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT, env=self.env)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def topic_ends(params) -> dict[int, int]:
    return end_offsets(services.endpoints(params).bootstrap_servers, params.kafka.topic)


def inject(fault: str, ingest: Supervised, stream: Supervised, params, feed=None) -> int:
    """Inject `fault`; the number of hostile records or events it sent (0 for the others)."""
    if fault == "stalled instance":
        feed.stall(3 * params.source.watchdog_s)  # the watchdog drops the silent connection; so does the next
        time.sleep(3 * params.source.watchdog_s)
    if fault in ("kill -9 stream", "kill -9 ingest and stream"):
        stream.kill()
    if fault in ("kill -9 ingest", "kill -9 ingest and stream"):
        ingest.kill()
    if fault.startswith("PostgreSQL"):
        services.stop_postgres(mode="immediate")
        time.sleep(20 if "outage" in fault else 2)
        services.up(params)
    if fault in ("kill -9 broker", "broker outage 30 s"):
        old = services.endpoints(params).bootstrap_servers
        os.kill(services.status()["kafka"]["pid"], signal.SIGKILL)
        while services.status()["kafka"]["alive"]:
            time.sleep(0.2)
        time.sleep(30 if "outage" in fault else 2)
        if services.up(params).bootstrap_servers != old:  # its port was taken meanwhile: both follow it
            ingest.kill()
            stream.kill()
    if fault == "hostile records":
        from confluent_kafka import Producer
        records = hostile_records(int(time.monotonic() * 1000))
        prod = Producer({"bootstrap.servers": services.endpoints(params).bootstrap_servers, "acks": "all",
                         "message.max.bytes": 8 * 1024 * 1024})
        for value in records:
            prod.produce(params.kafka.topic, value)
        if prod.flush(60):
            raise RuntimeError("the hostile records were not acknowledged within 60 s")
        return len(records)
    return 0


def soak(args, params_file: Path, params, feed=None) -> list[dict]:
    cli = ["--params", str(params_file)]
    where = services.endpoints(params)
    sink = PostgresSink(params, where, str(checkpoint_path(params, where)))  # only its ledger is read
    if feed is None:
        ingest = Supervised("ingest", [*cli, "ingest", "--source", "replay", "--replay",
                                       str(STATE / "replay.jsonl"), "--rate", str(args.rate)])
    else:  # the token goes to the instance that issued it: the fake one, on loopback
        ingest = Supervised("ingest", [*cli, "ingest"], env=feed.ingest_env())
    stream = Supervised("stream", [*cli, "stream", "--follow"])
    if feed is not None:  # the instance posts from the moment ingest listens, as `make live` sees a real one
        ingest.check()
        wait_until(lambda: feed.opened > 0 or ingest.proc.poll() is not None, 120, "ingest to connect")
        feed.start()
    kinds = FAULTS + (LIVE_FAULTS if feed else ())
    rng, faults, bursts = random.Random(args.seed), [], Bursts(feed)
    t_end, next_fault = time.monotonic() + args.minutes * 60, time.monotonic() + args.every
    start = time.monotonic()
    watch = RecoveryWatch(sink, faults)
    watch.start()
    while time.monotonic() < t_end or not ingest.done or not caught_up(sink, topic_ends(params)):
        ingest.check()
        stream.check()
        if feed is not None and time.monotonic() >= t_end:
            finish_live(feed, ingest, where.database_url)
        if time.monotonic() >= next_fault and time.monotonic() < t_end:
            fault = rng.choice(kinds)
            target = {"kill -9 stream": stream, "kill -9 ingest": ingest,
                      "kill -9 ingest and stream": ingest}.get(fault)
            ends, t0 = topic_ends(params), time.monotonic()
            hostile = inject(fault, ingest, stream, params, feed)
            faults.append({"fault": fault, "at_s": round(t0 - start, 1), "ends": ends, "t0": t0,
                           "hit": target is None or not target.done, "hostile": hostile})
            next_fault = time.monotonic() + args.every * rng.uniform(0.5, 1.5)
        if feed is not None and time.monotonic() < t_end:
            bursts.tick(ingest, faults)
        sample_rss(ingest, stream)
        if time.monotonic() - start > args.minutes * 60 + 900:
            raise TimeoutError("the stream did not catch up within 15 minutes of the last fault")
        time.sleep(0.5)
    watch.stop()  # the loop ended caught up with the topic: every fault before has recovered
    stream.proc.send_signal(signal.SIGTERM)
    stream.proc.wait(120)
    for f in faults:
        f.pop("t0"), f.pop("ends")
    return faults, ingest.starts, stream.starts, bursts.sent


class Bursts:
    """Hostile events on the live stream every HOSTILE_EVERY_S while nothing else is under way (ingest up on a
    connection open for 3 s, no stall, no fault in the last 15 s): each of them must end as a dead letter. Events
    sent with no connection open (ingest down) would reach no one, as on a real instance."""

    def __init__(self, feed) -> None:
        self.feed, self.sent, self.last = feed, [], time.monotonic()
        self.opened, self.opened_at = -1, time.monotonic()

    def tick(self, ingest: Supervised, faults: list[dict]) -> None:
        now = time.monotonic()
        if self.feed.opened != self.opened:
            self.opened, self.opened_at = self.feed.opened, now
        steady = (ingest.proc is not None and ingest.proc.poll() is None and now - self.opened_at >= 3
                  and now > self.feed.stalled_until + 3 and (not faults or now - faults[-1]["t0"] >= 15))
        if steady and now - self.last >= HOSTILE_EVERY_S:
            self.sent.append(self.feed.hostile())
            self.last = now


def wait_until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.2)


def lost_runs(lost: set[str], rate: float) -> list[list[float]]:
    """The lost statuses of a live soak as runs of consecutive ids: [first, last] second of posting and count."""
    ids = sorted(int(u.rsplit("/", 1)[1]) - FIRST_ID for u in lost if u.rsplit("/", 1)[1].isdigit())
    runs: list[list] = []
    for i in ids:
        if runs and i - runs[-1][1] <= 5:
            runs[-1][1], runs[-1][2] = i, runs[-1][2] + 1
        else:
            runs.append([i, i, 1])
    return [[round(a / rate, 1), round(b / rate, 1), n] for a, b, n in runs]


def finish_live(feed, ingest: Supervised, url: str) -> None:
    """After the soak: the instance posts no more; once everything it posted is stored (or 5 minutes went by),
    ingest is stopped as `make live-stop` stops it (SIGTERM: it flushes and exits 0)."""
    if not feed.stopped:
        feed.stop()
        feed.stopped_at = time.monotonic()
    if ingest.done or ingest.proc is None or ingest.proc.poll() is not None:
        return
    try:
        stored = db.scalar(url, "SELECT count(*) FROM mastodon_posts")
    except (DatabaseUnavailable, psycopg2.Error):
        return
    if stored >= len(feed.latest) or time.monotonic() - feed.stopped_at > 300:
        ingest.proc.send_signal(signal.SIGTERM)
        ingest.proc.wait(120)


def recovery(faults: list[dict]) -> dict:
    """Per kind, (median, max) of the seconds until the stream had committed what the topic held at the fault."""
    import statistics
    out = {}
    for kind in FAULTS + LIVE_FAULTS:
        secs = [f["recovered_s"] for f in faults if f["fault"] == kind and "recovered_s" in f]
        if secs:
            out[kind] = [round(statistics.median(secs), 1), max(secs)]
    return out


PEAKS: dict[str, float] = {}


def sample_rss(ingest: Supervised, stream: Supervised) -> None:
    """The peak resident memory (MB) seen so far of ingest, the stream driver (Python and its JVM), the broker."""
    pids = {"ingest": ingest.proc, "stream driver": stream.proc}
    for name, proc in pids.items():
        if proc is not None and proc.poll() is None:
            _peak(name, proc.pid)
            for child in _children(proc.pid):
                _peak(f"{name} JVM", child)
    broker = services.status().get("kafka", {})
    if broker.get("alive"):
        _peak("broker", broker["pid"])


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _peak(name: str, pid: int) -> None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                PEAKS[name] = max(PEAKS.get(name, 0.0), round(int(line.split()[1]) / 1024, 1))
    except OSError:
        pass


def peak_rss() -> dict[str, float]:
    return dict(PEAKS)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=4)
    ap.add_argument("--every", type=float, default=20, help="seconds between faults (on average)")
    ap.add_argument("--rate", type=float, default=200, help="toots per second replayed")
    ap.add_argument("--n", type=int, default=40000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", help="default: bench/results/chaos.json (live) or chaos-replay.json")
    ap.add_argument("--source", choices=("replay", "live"), default="replay",
                    help="a replayed sample, or a fake instance posting live (stream, REST gap-fill)")
    args = ap.parse_args()
    args.out = args.out or str(ROOT / "bench" / "results" / ("chaos.json" if args.source == "live" else
                                                              "chaos-replay.json"))
    feed = LiveFeed(args.rate) if args.source == "live" else None
    source = {"republish": True} if feed is None else {
        "kind": "stream", "instances": [feed.url], "watchdog_s": 5.0, "reconnect_base_s": 0.5,
        "reconnect_max_s": 5.0, "request_timeout_s": 10.0}
    tree = {"run": {"name": "chaos"}, "kafka": {"topic": "chaos", "dlq_topic": "chaos_dlq"},
            "stream": {"trigger": "processing_time", "processing_time": "0.5 seconds", "query_name": "chaos",
                       "watermark_minutes": 10 ** 6, "checkpoint_dir": str(STATE / "checkpoints")},
            "source": source, "spark": {"master": "local[2]", "shuffle_partitions": 2}}
    params_file = STATE / "chaos.yaml"
    params_file.write_text(yaml.safe_dump(tree))
    params = config.load(params_file, use_env=False)
    try:
        url = services.up(params).database_url
        db.ensure_schema(url)
        if feed is None:
            write_replay(STATE / "replay.jsonl", args.n, args.seed)
        t0 = time.monotonic()
        faults, ingest_starts, stream_starts, bursts = soak(args, params_file, params, feed)
        where = services.endpoints(params)
        if feed is None:
            expected = {u: None for u in expected_posts(generate(args.n, args.seed), params.filters)}
        else:
            expected = dict(feed.latest)  # uri -> newest content
        stored = db.query_df(url, "SELECT uri, content FROM mastodon_posts")
        uris = list(stored.uri)
        deleted = feed.deleted if feed else set()  # an edit or delete no live connection got is not recoverable
        stale = sum(1 for u, c in zip(stored.uri, stored.content)
                    if expected.get(u) and "(edited)" in expected[u] and "(edited)" not in c)
        inv = checks.stream_invariants(url, where.bootstrap_servers, params.kafka.topic,
                                       str(checkpoint_path(params, where)))
        error_rows = db.scalar(url, "SELECT count(*) FROM stream_errors WHERE topic = %s", (params.kafka.topic,))
        dead_letters = sum(end_offsets(where.bootstrap_servers, params.kafka.dlq_topic).values()) if feed else 0
        rss = peak_rss()
        lost = set(expected) - set(uris)
        hostile_events = sum(bursts)
        if lost or len(uris) != len(set(uris)) or dead_letters != hostile_events:  # keep the logs, to see why
            kept = ROOT / ".tootpipe" / f"chaos-logs-{time.strftime('%Y%m%dT%H%M%S')}"
            kept.mkdir(parents=True)
            for log in STATE.glob("*.log"):
                shutil.copy(log, kept)
            print(f"logs kept in {kept}")
    finally:
        services.down()
        if feed is not None:
            feed.close()
        shutil.rmtree(STATE, ignore_errors=True)  # its broker's and PostgreSQL's data: gigabytes on a long soak
    kills = sum(f["fault"] in ("kill -9 ingest", "kill -9 ingest and stream") and f["hit"] for f in faults)
    result = {"source": args.source, "minutes": args.minutes, "rate": args.rate,
              "toots": args.n if feed is None else feed.next_id - FIRST_ID, "seconds": round(time.monotonic() - t0),
              "edits": feed.edits if feed else 0, "stale_edits": stale,
              "hostile_events": hostile_events, "hostile_bursts": len(bursts),
              "dead_letters": dead_letters, "ingest_exits_not_injected": ingest_starts - 1 - kills,
              "faults": faults, "ingest_starts": ingest_starts, "stream_starts": stream_starts,
              "expected_posts": len(expected), "stored_posts": len(uris), "lost": len(lost),
              "lost_runs_s": lost_runs(lost, args.rate) if feed else [],
              "duplicates": len(uris) - len(set(uris)), "unexpected": len(set(uris) - set(expected) - deleted),
              "deletes_missed": len(set(uris) & deleted), "deletes": len(deleted),
              "messages_in_topic": inv["in_topic"], "ledger_rows": inv["ledger_rows"],
              "hostile_records": sum(f["hostile"] for f in faults if f["fault"] == "hostile records"),
              "error_rows": int(error_rows),
              "faults_by_kind": {k: sum(f["fault"] == k for f in faults) for k in FAULTS + LIVE_FAULTS},
              "recovery_s": recovery(faults), "peak_rss_mb": rss, "invariant_failures": inv["failures"]}
    print(f"{'fault':<26} {'at s':>6} {'caught up with the topic after s':>33}")
    for f in faults:
        note = "" if f["hit"] else " (it had finished)"
        print(f"{f['fault']:<26} {f['at_s']:>6} {f.get('recovered_s', 'never'):>33}{note}")
    print(f"{len(faults)} faults in {result['seconds']} s; ingest started {ingest_starts}x, stream {stream_starts}x; "
          f"{len(uris)} stored of {len(expected)} expected: lost {result['lost']}, duplicates {result['duplicates']}, "
          f"unexpected {result['unexpected']}; {inv['in_topic']} messages, ledger {inv['ledger_rows']}; "
          f"invariants: {'; '.join(inv['failures']) or 'all hold'}")
    write(args.out, result)
    print(f"hostile records {result['hostile_records']}, error rows {result['error_rows']}; hostile events "
          f"{result['hostile_events']}, dead letters {dead_letters}; edits not at their newest version {stale}, "
          f"deletes missed {result['deletes_missed']} of {len(deleted)} (unrecoverable when no live connection got them); "
          f"ingest exits not injected {result['ingest_exits_not_injected']}; recovery s (median, max) "
          f"{result['recovery_s']}; peak RSS MB {rss}")
    ok = not (result["lost"] or result["duplicates"] or result["unexpected"] or inv["failures"]
              or result["error_rows"] != result["hostile_records"] or dead_letters != hostile_events
              or (feed is None and stale))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
