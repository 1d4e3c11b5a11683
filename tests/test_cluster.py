"""The same job on executors in separate JVMs (`local-cluster`): Spark's Kafka connector shipped as jars, the library
as a zip.

Runs in a subprocess: a process has one SparkSession, and the suite's is local.
"""
import json
import subprocess
import sys

import pytest

from tootpipe import kafka, steps

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PROBE = """
import json, os, sys
from tootpipe.core import config
from tootpipe.spark import session as spark_session
bootstrap, topic = sys.argv[1:3]
spark = spark_session.get_spark(config.load(None, {"spark.master": "local-cluster[2,1,1024]"}, use_env=False))
df = spark.read.format("kafka").option("kafka.bootstrap.servers", bootstrap).option("subscribe", topic).load()

def origin(_):
    import tootpipe
    yield tootpipe.__file__, os.getpid()

found = df.rdd.mapPartitions(origin).collect()
print(json.dumps({"rows": df.count(), "distinct_offsets": df.select("partition", "offset").distinct().count(),
                  "origins": sorted({o for o, _ in found}), "worker_pids": len({p for _, p in found}),
                  "executors": spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1}))
spark.stop()
"""


def test_executors_in_separate_jvms_read_kafka_with_the_shipped_library(fresh):
    params, endpoints = fresh
    params.source.sample_n, params.source.sample_seed = 150, 4
    steps.ingest_step(params, endpoints)
    published = sum(kafka.end_offsets(endpoints.bootstrap_servers, params.kafka.topic).values())
    out = subprocess.run([sys.executable, "-c", PROBE, endpoints.bootstrap_servers, params.kafka.topic],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["executors"] == 2
    assert result["rows"] == result["distinct_offsets"] == published
    assert result["origins"] and all("tootpipe-lib.zip" in o for o in result["origins"]), result["origins"]
