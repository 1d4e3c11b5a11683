"""A class-data sharing (CDS) archive of the Spark driver JVM: Spark starts about 3.5 s sooner with it.

Every notebook kernel, CLI command and test session starts its own JVM, which loads, parses and verifies thousands
of Spark classes before its first query. `python -m tootpipe.spark.archive` (who runs it: below) starts Spark
once with `-XX:ArchiveClassesAtExit`, runs a small workload (SQL, Arrow) and keeps the classes the JVM loaded, already
parsed and verified, in `.tootpipe/cds/`; :func:`java_options` then hands the archive to every driver JVM.
Measured on 2 cores: the session is up in ~5.0 s instead of ~8.7 s; building the archive takes ~28 s, once.
`make test` builds it before the suite; `make lab`, `orchestrate` and `live` start the build in the background
(``--background``) and go on, `make run` once its notebooks are done: a driver started before it is written runs
without it, the next ones use it.
Guarantees: the archive is named after the `java` binary, its version and pyspark's version, so
an upgrade of either makes it unused (never wrong: the JVM also checks it and ignores one that does not match);
it is written to a temporary name and renamed once the JVM has finished writing it, so a reader never sees half an
archive; one build at a time (a lock file: a second builder waits, then finds the archive written); without an
archive nothing changes.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import traceback
from pathlib import Path

from tootpipe.core.paths import install_dir, project_root
from tootpipe.spark.java import archive_path
from tootpipe.spark.session import get_spark

__all__ = ["build", "in_background", "main"]


def _workload(spark) -> None:
    """What every Spark step does first: a session, SQL with an aggregate, Arrow both ways. (An MLlib fit as well
    made the archive 45 s to build instead of 26 s and notebook 05 no measurably faster.)"""
    import pandas as pd  # lazy: pandas
    from pyspark.sql import functions as F  # lazy: pyspark
    df = spark.createDataFrame(pd.DataFrame({"text": ["good day", "bad day", "a day"] * 20,
                                             "label": [2.0, 0.0, 1.0] * 20}))
    df.groupBy("label").agg(F.count("*"), F.max("text")).toArrow()


def build(force: bool = False) -> Path | None:
    """Create the archive for this java and pyspark (unless present); returns its path, or None when the JVM
    did not write one (the run goes on without it)."""
    final = archive_path()
    if final.exists() and not force:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also when this process dies
        if final.exists() and not force:  # written by the builder this one waited for
            return final
        return _build(final)


def _build(final: Path) -> Path | None:
    tmp = final.with_name(f"{final.stem}.{os.getpid()}.tmp")
    spark = get_spark(java_options=f"-XX:ArchiveClassesAtExit={tmp} -Xlog:cds=off -Xlog:cds+dynamic=off")
    _workload(spark)
    proc = spark.sparkContext._gateway.proc  # the driver JVM: it writes the archive as it exits
    spark.stop()
    proc.stdin.close()  # the gateway exits when its stdin closes
    proc.wait(timeout=600)
    if not tmp.exists() or tmp.stat().st_size == 0:
        return None
    tmp.rename(final)
    for stale in final.parent.glob("spark-driver-*"):
        if stale != final:
            stale.unlink(missing_ok=True)
    return final


def in_background() -> bool:
    """Start a build in a process of its own, detached from this one and at the lowest CPU priority (it takes the
    cores the user's work leaves idle: notebooks 01-04 took 3-4 s longer beside it, 9-10 s at normal priority),
    unless the archive is there; returns whether one started (its output goes to the log, as with :func:`main`)."""
    if archive_path().exists():
        return False
    subprocess.Popen([sys.executable, "-m", "tootpipe.spark.archive", "--low-priority"], cwd=project_root(),
                     start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    return True


def main(argv: list[str]) -> int:
    """Build the archive with the JVM's and Spark's output in `.tootpipe/logs/jvm-archive.log`; one line out. A
    build that fails says so and where to read why, and the install goes on (Spark then starts without it)."""
    log = install_dir() / "logs" / "jvm-archive.log"
    if "--background" in argv:
        if in_background():
            print(f"Spark driver class archive: building in the background (log: {log.relative_to(project_root())})")
        return 0
    if "--low-priority" in argv:
        os.nice(19)  # the JVM and its Python workers inherit it
    log.parent.mkdir(parents=True, exist_ok=True)
    saved = os.dup(1), os.dup(2)
    with open(log, "w") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            out = build(force="--force" in argv)
        except Exception:  # an optimisation: its failure never stops the install
            fh.write(traceback.format_exc())
            fh.flush()
            out = None
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
    root = project_root()
    print(f"Spark driver class archive: {out.relative_to(root)}" if out else
          f"Spark driver class archive not written (Spark starts without it): see {log.relative_to(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
