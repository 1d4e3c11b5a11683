"""The one SparkSession of a process: local mode by default, any `spark.master` from the parameters.

Guarantees: fails early with a clear message when Java 17+ is missing; workers run the driver's Python (so they
import this library); on a non-local master the library is shipped to executors as a zip; Spark's own Kafka connector
and the PostgreSQL JDBC driver (jvm/pom.xml, fetched once by Maven) are on the classpath, so ``format("kafka")``
works; the `pgquery` data source is registered; the session time zone is UTC.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from .config import Params, project_root

__all__ = ["get_spark", "java_version", "JavaMissing"]

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


class JavaMissing(RuntimeError):
    """Spark needs Java 17 or newer."""


@functools.lru_cache(maxsize=1)
def java_release() -> tuple[str, str]:
    """(path of the `java` that Spark will run, what its `java -version` prints); JavaMissing without one."""
    java = shutil.which("java", path=(os.environ.get("JAVA_HOME", "") + "/bin:" if os.environ.get("JAVA_HOME") else "")
                        + os.environ.get("PATH", ""))
    if not java:
        raise JavaMissing("Spark needs Java 17+, and no `java` is on PATH: install it (Debian/Ubuntu: "
                          "apt-get install -y openjdk-17-jre-headless) or set JAVA_HOME")
    return java, subprocess.run([java, "-version"], capture_output=True, text=True).stderr


def java_version() -> int:
    java, out = java_release()
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not m:
        raise JavaMissing(f"cannot read the Java version from: {out.strip()[:200]}")
    major = int(m.group(1)) if m.group(1) != "1" else int(m.group(2))
    if major < 17:
        raise JavaMissing(f"Spark 4 needs Java 17+, found Java {major} ({java}); install openjdk-17 or set JAVA_HOME")
    return major


def _library_zip() -> Path:
    """lib/tootpipe as a zip for executors on a cluster (rebuilt when any module is newer)."""
    src = Path(__file__).parent
    out = project_root() / ".tootpipe" / "tootpipe-lib.zip"
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
    """Run `start` (which launches the JVM) with the secrets out of the environment: the JVM, and the Python
    workers it forks, inherit the environment they were started with and need none of them."""
    from .config import SECRET_NAMES
    saved = {k: os.environ.pop(k) for k in SECRET_NAMES if k in os.environ}
    try:
        return start()
    finally:
        os.environ.update(saved)


def get_spark(params: Params | None = None, app_name: str = "tootpipe", *, java_options: str | None = None):
    """The process's SparkSession, created on first call with the parameters' master and memory; the driver JVM
    gets `java_options` (default: the class archive of :mod:`tootpipe.jvm_archive`, when there is one)."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    java_version()
    if params is None:
        from .config import load
        params = load()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    state = project_root() / ".tootpipe"
    state.mkdir(parents=True, exist_ok=True)
    log4j = state / "log4j2.properties"
    log4j.write_text(_LOG4J)
    master = params.spark.master
    from .jars import spark_jars
    if java_options is None:
        from .jvm_archive import java_options as archive_options
        java_options = archive_options()
    builder = (SparkSession.builder.appName(app_name).master(master)
               .config("spark.jars", ",".join(spark_jars()))
               .config("spark.driver.memory", params.spark.driver_memory)
               .config("spark.sql.shuffle.partitions", str(params.spark.shuffle_partitions))
               .config("spark.sql.session.timeZone", "UTC")
               # Spark's own stage progress bar on a terminal (the CLI's backfill, training); never in a report
               .config("spark.ui.showConsoleProgress", str(_on_terminal()).lower())
               .config("spark.ui.enabled", "false")
               .config("spark.sql.warehouse.dir", str(state / "spark-warehouse"))
               .config("spark.local.dir", str(state / "spark-tmp"))
               .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{log4j} "
                       f"-Dderby.system.home={state} {java_options}".strip())
               .config("spark.executorEnv.PYSPARK_PYTHON", sys.executable)
               .config("spark.sql.execution.arrow.pyspark.enabled", "true"))
    spark = _without_secrets(builder.getOrCreate)
    spark.sparkContext.setLogLevel(params.spark.log_level)
    if not master.startswith("local["):
        spark.sparkContext.addPyFile(str(_library_zip()))
    from .pg_source import register as register_pg
    register_pg(spark)
    return spark
