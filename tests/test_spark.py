"""Spark: the session, its class archive, the shared driver, column expressions, PostgreSQL through executors."""
import json

import pytest
from conftest import wait_until

from tootpipe.batch import backfill as batch
from tootpipe.postgres import db

SHARED_CHILD = """
import json, sys, tempfile
from tootpipe.core import config
from tootpipe.spark.session import get_spark
spark = get_spark(config.load(sys.argv[1], use_env=False))
jvm_pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
doubled = spark.range(3).rdd.map(lambda r: r.id * 2).collect()  # a Python worker forked by the shared JVM
src = tempfile.mkdtemp()
spark.range(5).write.json(src + "/in")
seen = []  # foreachBatch: the JVM calls back into this process, not into the one before it
query = (spark.readStream.schema("id long").json(src + "/in").writeStream
         .foreachBatch(lambda df, _i: seen.append(df.count())).trigger(availableNow=True).start())
query.awaitTermination()
print(json.dumps({"jvm": jvm_pid, "doubled": doubled, "batches": seen}))
"""


def test_slice_bounds_cover_every_integer_once():
    from tootpipe.spark.pg_source import slice_bounds
    b = slice_bounds(0, 100, 4)
    assert b[0][0] is None and b[-1][1] is None and len(b) == 4
    assert all(hi == lo for (_, hi), (lo, _) in zip(b, b[1:]))  # contiguous, no overlap
    assert slice_bounds(5, 5, 4) == [(None, None)]
    assert slice_bounds(0, 3, 10) == [(None, 0), (0, 1), (1, 2), (2, None)]  # more slices than values: no empties


def test_column_expressions_are_rebuilt_for_a_new_spark_context(monkeypatch):
    from pyspark import SparkContext

    from tootpipe.spark.transforms import _per_context
    built = []

    @_per_context
    def columns(x):
        built.append(x)
        return object()

    monkeypatch.setattr(SparkContext, "_active_spark_context", object(), raising=False)
    first = columns(1)
    assert columns(1) is first and columns(2) is not first and built == [1, 2]
    monkeypatch.setattr(SparkContext, "_active_spark_context", object(), raising=False)
    assert columns(1) is not first and built == [1, 2, 1]


def test_the_jvm_class_archive_is_keyed_by_java_and_pyspark_and_used_only_when_present(monkeypatch, tmp_path):
    from tootpipe.spark import java as jvm_archive
    real = jvm_archive.archive_path()
    monkeypatch.setattr(jvm_archive, "java_release", lambda: ("/usr/bin/java", 'openjdk version "17.0.99"'))
    other_java = jvm_archive.archive_path()
    monkeypatch.setattr(jvm_archive, "version", lambda name: "9.9.9")
    other_spark = jvm_archive.archive_path()
    assert len({real, other_java, other_spark}) == 3 and real.parent == other_java.parent
    archive = tmp_path / "spark-driver-x.jsa"
    monkeypatch.setattr(jvm_archive, "archive_path", lambda: archive)
    assert jvm_archive.java_options() == ""
    archive.write_bytes(b"\0")
    assert f"-XX:SharedArchiveFile={archive}" in jvm_archive.java_options().split()


def test_a_failed_class_archive_build_says_so_and_does_not_stop_the_install(monkeypatch, tmp_path, capsys):
    from tootpipe.spark import archive as jvm_archive

    def broken(force=False):
        raise RuntimeError("no JVM today")
    monkeypatch.setattr(jvm_archive, "project_root", lambda: tmp_path)
    monkeypatch.setattr(jvm_archive, "install_dir", lambda: tmp_path / ".tootpipe")
    monkeypatch.setattr(jvm_archive, "build", broken)
    assert jvm_archive.main([]) == 0
    assert "not written" in capsys.readouterr().out
    assert "no JVM today" in (tmp_path / ".tootpipe" / "logs" / "jvm-archive.log").read_text()


def test_a_second_class_archive_builder_waits_for_the_first_and_builds_nothing(monkeypatch, tmp_path):
    import fcntl
    import threading

    from tootpipe.spark import archive as jvm_archive
    final = tmp_path / "cds" / "spark-driver-x.jsa"
    final.parent.mkdir()
    monkeypatch.setattr(jvm_archive, "archive_path", lambda: final)
    monkeypatch.setattr(jvm_archive, "_build", lambda path: pytest.fail("a second JVM built the archive again"))
    result = []
    with open(final.parent / ".build.lock", "w") as held:  # the first builder, still writing
        fcntl.flock(held, fcntl.LOCK_EX)
        waiter = threading.Thread(target=lambda: result.append(jvm_archive.build()))
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive() and not result  # it waits for the lock
        final.write_bytes(b"archive")
    waiter.join(timeout=60)
    assert result == [final]


def test_the_background_class_archive_build_starts_only_when_missing_and_detached(monkeypatch, tmp_path, capsys):
    from tootpipe.spark import archive as jvm_archive
    final = tmp_path / "spark-driver-x.jsa"
    started = []
    monkeypatch.setattr(jvm_archive, "archive_path", lambda: final)
    monkeypatch.setattr(jvm_archive, "project_root", lambda: tmp_path)
    monkeypatch.setattr(jvm_archive, "install_dir", lambda: tmp_path / ".tootpipe")
    monkeypatch.setattr(jvm_archive.subprocess, "Popen", lambda argv, **kw: started.append((argv, kw)))
    assert jvm_archive.main(["--background"]) == 0
    (argv, kw), = started
    assert argv[1:] == ["-m", "tootpipe.spark.archive", "--low-priority"] and kw["start_new_session"]
    assert kw["cwd"] == tmp_path
    assert "building in the background" in capsys.readouterr().out
    final.write_bytes(b"archive")
    assert jvm_archive.main(["--background"]) == 0 and len(started) == 1


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_pgquery_reads_every_row_once_in_slices_with_nulls_empties_and_types(fresh, spark):
    params, endpoints = fresh
    url = endpoints.database_url
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE probe (k bigint, s text, b boolean, t timestamptz, d double precision)")
        cur.execute("INSERT INTO probe SELECT g, CASE WHEN g % 3 = 0 THEN NULL WHEN g % 3 = 1 THEN '' "
                    "ELSE E'x,\"y\"\n' || g END, g % 2 = 0, TIMESTAMPTZ '2026-11-26 23:59:59.5+00' + g * interval '1 s', "
                    "g / 4.0 FROM generate_series(1, 997) g")
        cur.execute("INSERT INTO probe VALUES (NULL, 'null key', NULL, NULL, NULL)")
    df = batch.read_query(spark, url, "SELECT * FROM probe", "k long, s string, b boolean, t timestamp, d double",
                          "k", partitions=5)
    assert df.rdd.getNumPartitions() == 5
    got = sorted(df.collect(), key=lambda r: (r.k is None, r.k or 0))
    want = db.query_df(url, "SELECT * FROM probe ORDER BY k NULLS LAST")
    assert len(got) == len(want) == 998
    assert [r.k for r in got[:-1]] == list(range(1, 998)) and got[-1].s == "null key"
    assert got[0].s == "" and got[1].s == 'x,"y"\n2' and got[2].s is None and got[1].b is True
    assert got[0].t.isoformat() == "2026-11-27T00:00:00.500000"  # UTC across midnight
    assert got[3].d == 1.0


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_failed_table_write_leaves_the_previous_table_intact(fresh, spark):
    params, endpoints = fresh
    ok = spark.createDataFrame([(1, "a"), (2, "b")], "n int, s string")
    assert batch.write_table(endpoints.database_url, "probe_out", ok) == 2
    from pyspark.sql import functions as F
    boom = F.udf(lambda n: 1 // (n - 2), "int")  # fails on the second row, inside a task
    bad = spark.createDataFrame([(1, "x"), (2, "y"), (3, "z")], "n int, s string").withColumn("n", boom("n"))
    with pytest.raises(Exception):
        batch.write_table(endpoints.database_url, "probe_out", bad)
    assert db.query_df(endpoints.database_url, "SELECT n, s FROM probe_out ORDER BY n").values.tolist() == [[1, "a"], [2, "b"]]


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_the_driver_jvm_runs_with_the_class_archive_when_there_is_one(spark):
    from tootpipe.core.jvm import jit_options
    from tootpipe.spark.archive import archive_path
    expected = str(archive_path()) if archive_path().exists() else ""  # make install builds it; without: none
    jvm = spark.sparkContext._jvm
    bean = jvm.java.lang.management.ManagementFactory.getPlatformMXBean(
        jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean"))
    assert bean.getVMOption("SharedArchiveFile").getValue() == expected
    assert bean.getVMOption("DontCompileHugeMethods").getValue() == "false"  # Spark's large generated methods JIT
    assert bean.getVMOption("UseParallelGC").getValue() == "true"  # G1's concurrent threads cost CPU on 2 cores
    c1 = "-XX:TieredStopAtLevel=1" in jit_options()  # the suite's TOOTPIPE_JIT=c1 (conftest) unless set otherwise
    assert bean.getVMOption("TieredStopAtLevel").getValue() == ("1" if c1 else "4")


def test_sparks_own_rpc_in_local_mode_takes_only_peers_that_know_the_applications_secret(spark):
    """Task closures carry the database URL: the driver's RPC and block manager ports authenticate their peers
    (Spark makes a secret for the application in local mode)."""
    security = spark.sparkContext._jsc.sc().env().securityManager()
    assert security.isAuthenticationEnabled() and len(security.getSecretKey()) >= 16


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_processes_in_a_shared_driver_block_use_its_one_jvm_one_after_another(tmp_path):
    """run_all's kernels: each child process gets its own SparkContext in the block's JVM (Python workers and
    foreachBatch callbacks reach the right process), even when the one before left its context running; the JVM
    ends with the block."""
    import os
    import subprocess
    import sys

    import yaml

    from tootpipe.core import config
    from tootpipe.spark.session import shared_driver
    params = config.load(None, {"spark.master": "local[2]", "spark.shuffle_partitions": 2}, use_env=False)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params.model_dump()))
    runs = []
    with shared_driver(params) as release:
        for _ in range(2):  # neither child stops its context: release() does
            out = subprocess.run([sys.executable, "-c", SHARED_CHILD, str(tmp_path / "p.yaml")], capture_output=True,
                                 text=True, timeout=300)
            assert out.returncode == 0, out.stderr[-3000:]
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            release()
        jvm = runs[0]["jvm"]
        os.kill(jvm, 0)  # alive while the block lasts
    assert [r["jvm"] for r in runs] == [jvm, jvm]
    assert all(r["doubled"] == [0, 2, 4] and sum(r["batches"]) == 5 for r in runs), runs
    assert "PYSPARK_GATEWAY_PORT" not in os.environ
    wait_until(lambda: not os.path.exists(f"/proc/{jvm}"), timeout=60, what="the shared JVM to exit")
