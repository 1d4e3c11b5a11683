"""Runs the streaming query in its own driver process until it has caught up with the topic (used by the
reliability tests, which kill it or the database under it). Usage: stream_worker.py PARAMS.yaml ENDPOINTS.json"""
import json
import sys

from tootpipe import config
from tootpipe.services import Endpoints
from tootpipe.spark_session import get_spark
from tootpipe.streaming import run_until_caught_up

params = config.load(sys.argv[1], use_env=False)
ep = Endpoints(**json.loads(open(sys.argv[2]).read()))
spark = get_spark(params)
try:
    print(json.dumps(run_until_caught_up(spark, params, ep, timeout_s=300)))
finally:
    spark.stop()
