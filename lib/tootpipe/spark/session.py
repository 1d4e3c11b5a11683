"""The one SparkSession of a process: local mode by default, any `spark.master` from the parameters.

Guarantees: fails early with a clear message when Java 17+ is missing; workers run the driver's Python (so they
import this library); on a non-local master the library is shipped to executors as a zip; Spark's own Kafka connector
and the PostgreSQL JDBC driver (jvm/pom.xml, fetched once by Maven) are on the classpath, so ``format("kafka")``
works; the `pgquery` data source is registered; the session time zone is UTC.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from py4j.protocol import Py4JError

from tootpipe.core.config import Params, credential_names, load
from tootpipe.core.errors import JavaMissing
from tootpipe.core.jvm import jit_options
from tootpipe.core.paths import install_dir, project_root, state_dir
from tootpipe.services.jars import spark_jars
from tootpipe.spark.java import java_options as archive_options, java_version

__all__ = ["get_spark", "shared_driver", "JavaMissing"]

_LOG4J = """status = error
rootLogger.level = error
rootLogger.appenderRef.stdout.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
logger.spark.name = org.apache.spark
logger.spark.level = error
"""



def _library_zip() -> Path:
    """lib/tootpipe as a zip for executors on a cluster (rebuilt when any module is newer)."""
    src = Path(__file__).parent
    out = install_dir() / "tootpipe-lib.zip"
    newest = max(p.stat().st_mtime for p in src.rglob("*.py"))
    if not out.exists() or out.stat().st_mtime < newest:
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            for p in src.rglob("*.py"):
                z.write(p, Path("tootpipe") / p.relative_to(src))
    return out


def _on_terminal() -> bool:
    try:
        return sys.stderr.isatty() and "ipykernel" not in sys.modules
    except (AttributeError, ValueError):
        return False


def _without_secrets(start):
    """Run `start` (which launches the JVM) with the secrets and any variable holding a password (`.env`'s
    `JDBC_URL`, `DATABASE_URL`) out of the environment: the JVM, and the Python workers it forks, inherit the
    environment they were started with and need none of them (tasks get their database URL from the job)."""
    saved = {k: os.environ.pop(k) for k in credential_names()}
    try:
        return start()
    finally:
        os.environ.update(saved)


# HotSpot never JIT-compiles a method of more than 8,000 bytes of bytecode, and the code Spark generates for the
# parse (one projection of ~40 fields, three time fields each tried against eight formats) has such methods: they
# stayed interpreted. Compiled, the exactly-once stream drains a 177,990-message backlog in 12.3-12.7 s instead of
# 13.5-14.3 s (measured side by side, warm session; the backfill, bound by PostgreSQL, unchanged).
_JIT_OPTIONS = "-XX:-DontCompileHugeMethods"


def _jit() -> str:
    """The huge methods compiled, and the JIT of ``$TOOTPIPE_JIT`` (:mod:`tootpipe.core.jvm`)."""
    return " ".join([_JIT_OPTIONS, *jit_options()])


# The driver (in local mode also the executor) on the parallel collector instead of G1: on 2 cores G1's concurrent
# threads cost CPU on every small job of a run (backfill +9%, clean +6%, the suite's Spark tests -10% CPU;
# docs/performance-log.md, 2026-12-07). A cluster's executors keep the JVM's default.
_DRIVER_GC = "-XX:+UseParallelGC"


def _authentication(master: str) -> dict[str, str]:
    """In local mode Spark's own RPC (driver, block manager; task closures carry the database URL) accepts only
    peers that know the secret Spark makes for the application. A cluster keeps its own setting: its workers must
    share the secret, which belongs in the cluster's `spark-defaults.conf` (a `--conf` here would show it in the
    driver's command line); see SECURITY.md."""
    return {"spark.authenticate": "true"} if master == "local" or master.startswith("local[") else {}


def _prepare(params: Params, app_name: str, java_options: str | None) -> dict[str, str]:
    """The session's settings (those read when the driver JVM starts among them), with the environment the JVM
    and its Python workers need."""
    java_version()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    state = state_dir()
    log4j = state / "log4j2.properties"
    log4j.write_text(_LOG4J)
    if java_options is None:
        java_options = archive_options()
    return {**_authentication(params.spark.master), "spark.app.name": app_name, "spark.master": params.spark.master,
            "spark.jars": ",".join(spark_jars()),
            "spark.driver.memory": params.spark.driver_memory,
            "spark.sql.shuffle.partitions": str(params.spark.shuffle_partitions),
            "spark.sql.session.timeZone": "UTC",
            # Spark's own stage progress bar on a terminal (the CLI's backfill, training); never in a report
            "spark.ui.showConsoleProgress": str(_on_terminal()).lower(),
            "spark.ui.enabled": "false",
            "spark.sql.warehouse.dir": str(state / "spark-warehouse"),
            "spark.local.dir": str(state / "spark-tmp"),
            "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{log4j} "
                                             f"-Dderby.system.home={state} {_jit()} {_DRIVER_GC} {java_options}".strip(),
            "spark.executor.extraJavaOptions": _jit(),  # on a cluster the generated code runs there
            "spark.executorEnv.PYSPARK_PYTHON": sys.executable,
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            # Arrow batches to Python workers (mapInArrow: every COPY from the tasks) cut at maxRecordsPerBatch
            # (10,000) only: with a byte limit as well (Spark 4.1+, default 64 MB, never reached by 10,000 toots)
            # Spark measures the batch's size after every row, 4% of the backfill's JVM time (profiled); the
            # maximum turns that check off
            "spark.sql.execution.arrow.maxBytesPerBatch": "2147483647",
            # each micro-batch writes two checkpoint files (offsets, commits), each a temporary file renamed into
            # place. Through Hadoop's FileContext (Spark's default) a local rename looks for symbolic links by
            # starting a `readlink` process for each path (strace: a fork+exec per path per file): ~22 ms per file
            # on 2 cores, ~6 with the FileSystem API, which renames with rename(2) (walCommit + commitOffsets
            # 44 -> 12 ms per trigger, measured). Both check that the target is absent, then rename: the same
            # guarantee on local disk and HDFS. Local files without Hadoop's .crc side files (they doubled the
            # work of each checkpoint file).
            "spark.sql.streaming.checkpointFileManagerClass":
                "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager",
            "spark.hadoop.fs.file.impl": "org.apache.hadoop.fs.RawLocalFileSystem"}


def get_spark(params: Params | None = None, app_name: str = "tootpipe", *, java_options: str | None = None):
    """The process's SparkSession, created on first call with the parameters' master and memory; the driver JVM
    gets `java_options` (default: the class archive of :mod:`tootpipe.spark.archive`, when there is one). Inside a
    :func:`shared_driver` block's child processes, the session is created in that block's JVM."""
    from pyspark.sql import SparkSession  # lazy: pyspark

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if params is None:
        params = load()
    builder = SparkSession.builder
    for key, value in _prepare(params, app_name, java_options).items():
        builder = builder.config(key, value)
    spark = _without_secrets(builder.getOrCreate)
    spark.sparkContext.setLogLevel(params.spark.log_level)
    if not params.spark.master.startswith("local["):
        spark.sparkContext.addPyFile(str(_library_zip()))
    from tootpipe.spark.pg_source import register as register_pg  # lazy: pyspark
    register_pg(spark)
    return spark


_GATEWAY_ENV = ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET")
_shared: list = []  # the release function of the shared_driver block this process is in, if any


@contextlib.contextmanager
def shared_driver(params: Params, app_name: str = "tootpipe"):
    """One Spark driver JVM for processes that run one after another (run_all's notebook kernels): started here
    with the settings :func:`get_spark` would give it and named to child processes through PySpark's own
    PYSPARK_GATEWAY_PORT/SECRET (py4j, authenticated, on 127.0.0.1), so each child skips the JVM start and finds
    the classes loaded and the hot code already compiled. Each child still gets a SparkContext of its own: call the
    yielded function after each child to stop the one it left. The JVM ends with the block (or with this process:
    it exits when its stdin closes). A block inside another one of the same process uses the outer block's JVM
    (runs one after another in one process, e.g. the orchestrator's in-process runs, skip its start and warm-up)."""
    if _shared:  # inside another block of this process (runs one after another): its JVM, warm already
        yield _shared[-1]
        return
    from pyspark import SparkConf  # lazy: pyspark
    from pyspark.java_gateway import launch_gateway  # lazy: pyspark

    conf = SparkConf(loadDefaults=False).setAll(list(_prepare(params, app_name, None).items()))
    saved = {k: os.environ.pop(k, None) for k in _GATEWAY_ENV}  # launch a JVM, never attach to another's
    try:
        gateway = _without_secrets(lambda: launch_gateway(conf, popen_kwargs={"cwd": str(project_root())}))
        os.environ["PYSPARK_GATEWAY_PORT"] = str(gateway.java_parameters.port)
        os.environ["PYSPARK_GATEWAY_SECRET"] = gateway.java_parameters.auth_token

        def release() -> None:
            """Stop the SparkContext a child left running, if any (the next child creates its own)."""
            try:
                session = gateway.jvm.org.apache.spark.sql.SparkSession.getDefaultSession()  # PySpark sets it
                if session.isDefined() and not session.get().sparkContext().isStopped():
                    session.get().sparkContext().stop()
            except Py4JError as exc:  # the JVM is gone: the next child that needs Spark fails and says so
                print(f"the shared Spark driver is gone: {exc}", file=sys.stderr)

        _shared.append(release)
        try:
            yield release
        finally:
            _shared.pop()
            gateway.shutdown()
            gateway.proc.stdin.close()
            try:
                gateway.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                gateway.proc.kill()
                gateway.proc.wait()
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value
