"""The benchmarks' own contract: the JSON keys the README and the issues name, and nothing left behind (a run used
to leave its topics on the broker). Timing is never asserted here: bench/ measures, the tests check."""
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _topics(bootstrap: str) -> set[str]:
    from tootpipe import kafka
    return set(kafka.admin._metadata(bootstrap).topics)


def test_ingest_bench_writes_its_figures_and_deletes_its_topics(services_up, tmp_path):
    before = _topics(services_up.bootstrap_servers)
    out = tmp_path / "ingest.json"
    # as a user runs it; TOOTPIPE_STATE_DIR (set by conftest) points it at the suite's own services
    r = subprocess.run([sys.executable, "bench/ingest.py", "--n", "300", "--out", str(out)], cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "lib")}, capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["n_events"] > 300 and res["messages_in_topic"] == res["published"] + res["deletes"] > 0
    assert all(res[k] > 0 for k in ("toots_per_s", "raw_produce_per_s", "raw_consume_per_s", "ratio"))
    left = {t for t in _topics(services_up.bootstrap_servers) - before if t.startswith(("bench_ingest_", "bench_raw_"))}
    assert not left, f"the bench left its topics behind: {sorted(left)}"


def test_the_chaos_soak_times_a_recovery_while_its_loop_is_blocked_in_an_injection():
    """The soak's loop sleeps inside some injections (a stall, an outage): a stream killed before one of them was
    seen recovered only when it returned (30.9 s in the soak of 2026-12-07 13:35: the stall's 15 s after it)."""
    import time

    from conftest import wait_until
    sys.path.insert(0, str(ROOT / "bench"))
    state = os.environ.get("TOOTPIPE_STATE_DIR")
    import recovery
    assert os.environ.get("TOOTPIPE_STATE_DIR") == state  # importing chaos.py moved it: the worker's next tests failed

    class Ledger:  # what PostgresSink.committed_ends reads: per partition, the end the stream has committed
        ends = {0: 5, 1: 7}

        def committed_ends(self):
            return dict(self.ends)
    ledger = Ledger()
    faults = [{"fault": "kill -9 stream", "ends": {0: 10, 1: 7}, "t0": time.monotonic()}]
    watch = recovery.RecoveryWatch(ledger, faults)
    watch.check()
    assert "recovered_s" not in faults[0]  # partition 0 is behind
    watch.start()
    ledger.ends = {0: 10, 1: 7}  # committed while the soak's own loop is elsewhere
    wait_until(lambda: "recovered_s" in faults[0], 30, "the watch to see the stream caught up")
    faults.append({"fault": "kill -9 ingest", "ends": {0: 10}, "t0": time.monotonic()})
    watch.stop()  # its last check: a fault not sampled yet, caught up, is recovered too
    assert all("recovered_s" in f for f in faults) and not watch.is_alive()
