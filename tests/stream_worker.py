"""Runs the streaming query in its own driver process until it has caught up with the topic (used by the
reliability tests, which kill it or the database under it). Usage: stream_worker.py PARAMS.yaml ENDPOINTS.json

With ``TOOTPIPE_FAULT=kill_after_commit:N`` the driver kills itself with SIGKILL right after batch N committed in
PostgreSQL and before Spark records it as done: the crash the sink's ledger exists for."""
import json
import logging
import os
import signal
import sys

from tootpipe import config
from tootpipe.services import Endpoints
from tootpipe.spark_session import get_spark
from tootpipe.stream_query import run_until_caught_up

params = config.load(sys.argv[1], use_env=False)
endpoints = Endpoints(**json.loads(open(sys.argv[2]).read()))
fault = os.environ.get("TOOTPIPE_FAULT", "")


def crash_after(batch_id: int) -> None:
    if fault == f"kill_after_commit:{batch_id}":
        logging.getLogger("stream_worker").warning("killing the driver after committing batch %d", batch_id)
        os.kill(os.getpid(), signal.SIGKILL)


spark = get_spark(params)
try:
    hook = crash_after if fault else None
    print(json.dumps(run_until_caught_up(spark, params, endpoints, timeout_s=300, after_commit=hook)))
finally:
    spark.stop()
