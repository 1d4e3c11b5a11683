"""The Java that runs Spark's driver, and the options it starts with: the class-data sharing archive of
:mod:`tootpipe.spark.archive` when one was built for this java and pyspark.

Guarantees: Java 17+ or a :class:`JavaMissing` that says what to install; the archive is named after the `java`
binary, its version and pyspark's version, so an upgrade of either makes it unused (never wrong: the JVM also
checks it and ignores one that does not match); without an archive the options are empty.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

from tootpipe.core.errors import JavaMissing
from tootpipe.core.paths import install_dir

__all__ = ["java_release", "java_version", "archive_path", "java_options", "JavaMissing"]

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


def archive_path() -> Path:
    """Where this machine's archive lives: keyed by the java binary, its version and pyspark's version."""
    java, release = java_release()
    key = hashlib.sha256(f"{os.path.realpath(java)}\n{release}\n{version('pyspark')}".encode()).hexdigest()[:16]
    return install_dir() / "cds" / f"spark-driver-{key}.jsa"


def java_options() -> str:
    """The driver JVM options that use the archive, or "" when there is none for this java and pyspark."""
    path = archive_path()
    # -Xshare:auto: an archive the JVM cannot map is skipped; its CDS log lines stay out of the console
    return f"-XX:SharedArchiveFile={path} -Xshare:auto -Xlog:cds=off -Xlog:cds+dynamic=off" if path.exists() else ""
