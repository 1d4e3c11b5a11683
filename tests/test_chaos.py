"""A short chaos run of live ingest (the long soak, with the stream and the servers' faults, is bench/chaos.py):
a fake instance posting 100 statuses a second on its stream and its timeline, with edits, deletes, a stall and
hostile events, into `tootpipe ingest` (source stream), killed with SIGKILL twice and started again as a
supervisor would. Every status posted must reach the topic, and every hostile event the dead letters."""
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import ROOT, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def topic_uris(bootstrap: str, topic: str) -> set[str]:
    from tootpipe import kafka
    return {m["value"].get("uri") for m in kafka.export(bootstrap, topic, max_messages=10 ** 6)}


def test_live_ingest_killed_stalled_and_fed_hostile_events_loses_no_status(fresh, tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    from live_feed import FIRST_ID, LiveFeed

    from tootpipe import kafka
    params, endpoints = fresh
    feed = LiveFeed(100)
    feed.fake.rate_window_s = 5  # Mastodon.py paces REST to the limit: ~1 page a second at Mastodon's 300 per 5
    # minutes (the soak keeps that); here 60x faster, so that the catch-up after each fault takes seconds
    source = {"kind": "stream", "instances": [feed.url], "watchdog_s": 2.0, "reconnect_base_s": 0.2,
              "reconnect_max_s": 1.0, "request_timeout_s": 10.0}
    pfile = tmp_path / "live.yaml"
    pfile.write_text(yaml.safe_dump({"kafka": {"topic": params.kafka.topic, "dlq_topic": params.kafka.dlq_topic},
                                     "source": source}))
    env = feed.ingest_env()
    log = open(tmp_path / "ingest.log", "ab")

    def start():
        opened = feed.opened
        proc = subprocess.Popen([sys.executable, "-m", "tootpipe.cli", "--params", str(pfile), "ingest"], cwd=ROOT,
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: feed.opened > opened or proc.poll() is not None, 120, "ingest to connect")
        assert proc.poll() is None, (tmp_path / "ingest.log").read_text()[-3000:]
        return proc

    def posted() -> int:
        return feed.next_id - FIRST_ID

    def kill(proc):
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    try:
        proc = start()
        feed.start()
        wait_until(lambda: posted() >= 200, 60, "200 statuses posted")
        kill(proc)                            # records in flight, none acknowledged for a while: resume below them
        wait_until(lambda: posted() >= 400, 60, "400 statuses posted")
        proc = start()
        feed.hostile()                        # a 5 MB line, 2,000 deep, wrong types, NULs, a cut event
        wait_until(lambda: posted() >= 600, 60, "600 statuses posted")
        opened = feed.opened
        feed.stall(5)                         # silent for 2.5 watchdog periods while the timeline grows: the stall
        # ends on a connection opened during it, which must not bound its gap before its first heartbeat
        wait_until(lambda: feed.opened >= opened + 2, 60, "the watchdog to replace the connection twice")
        wait_until(lambda: time.monotonic() > feed.stalled_until, 60, "the stall to end")
        kill(proc)
        proc = start()
        feed.hostile()
        wait_until(lambda: posted() >= 900, 60, "900 statuses posted")
        feed.stop()
        expected = set(feed.latest)  # (a status deleted while ingest was down may never have been seen)
        missing = []

        def all_in_topic() -> bool:
            missing[:] = sorted(expected - topic_uris(endpoints.bootstrap_servers, params.kafka.topic))
            return not missing

        try:
            wait_until(all_in_topic, 240, "every status posted in the topic")
        except AssertionError:
            lost = [int(u.rsplit("/", 1)[1]) - FIRST_ID for u in missing]
            raise AssertionError(f"{len(lost)} statuses never reached the topic, posted as numbers {lost[:5]}.."
                                 f"{lost[-5:]}; ingest's log: {(tmp_path / 'ingest.log').read_text()[-4000:]}")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        feed.close()
        if proc.poll() is None:
            kill(proc)
    dead = sum(kafka.end_offsets(endpoints.bootstrap_servers, params.kafka.dlq_topic).values())
    assert dead == feed.hostile_sent == 10, (tmp_path / "ingest.log").read_text()[-3000:]
