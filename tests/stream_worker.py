"""Runs the streaming query in its own driver process until it has caught up with the topic (used by the
reliability tests, which kill it or the database under it). Usage: stream_worker.py PARAMS.yaml ENDPOINTS.json

With ``TOOTPIPE_FAULT=kill_after_commit:N`` the driver kills itself with SIGKILL right after batch N committed in
PostgreSQL and before Spark records it as done (run with a serial sink): the crash the sink's ledger exists for.
With ``TOOTPIPE_FAULT=kill_before_apply:N`` an overlapped sink's thread, about to apply batch N, waits until Spark
recorded that batch as done and kills the driver: the batch is claimed in the ledger and nowhere else."""
import json
import logging
import os
import signal
import sys
import time

from tootpipe.core import config
from tootpipe.services.embedded import Endpoints
from tootpipe.spark.session import get_spark
from tootpipe.stream.query import PostgresSink, checkpoint_path, run_until_caught_up

params = config.load(sys.argv[1], use_env=False)
endpoints = Endpoints(**json.loads(open(sys.argv[2]).read()))
fault = os.environ.get("TOOTPIPE_FAULT", "")


def crash_after(batch_id: int) -> None:
    if fault == f"kill_after_commit:{batch_id}":
        logging.getLogger("stream_worker").warning("killing the driver after committing batch %d", batch_id)
        os.kill(os.getpid(), signal.SIGKILL)


if fault.startswith("kill_before_apply:"):
    doomed, write = int(fault.split(":")[1]), PostgresSink._write

    def write_or_die(self, b, claim):
        if not claim and b.batch_id == doomed:
            done = checkpoint_path(params, endpoints) / "commits" / str(doomed)
            deadline = time.monotonic() + 120
            while not done.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            logging.getLogger("stream_worker").warning("killing the driver before applying batch %d", doomed)
            os.kill(os.getpid(), signal.SIGKILL)
        return write(self, b, claim)

    PostgresSink._write = write_or_die

spark = get_spark(params)
try:
    hook = crash_after if fault.startswith("kill_after_commit") else None
    print(json.dumps(run_until_caught_up(spark, params, endpoints, timeout_s=300, after_commit=hook)))
finally:
    spark.stop()
