"""The commands a user of such a pipeline reaches for: psql on the project database (JupyterLab: test_lab.py)."""
import os
import subprocess
import sys

import pytest
from conftest import ROOT, STATE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}


def tootpipe(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tootpipe.cli", *args], cwd=ROOT, env=env or ENV,
                          capture_output=True, text=True, timeout=120)


def test_psql_runs_the_usual_sql_on_the_project_database_and_starts_nothing(services_up):
    from tootpipe.postgres import db
    db.ensure_schema(services_up.database_url)
    r = tootpipe("psql", "-At", "-c", "SELECT current_user, current_database(), "
                                      "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "tootpipe|tootpipe|f"
    r = tootpipe("psql", "-c", "SELECT COUNT(*) FROM mastodon_posts;")
    assert r.returncode == 0 and "count" in r.stdout, r.stderr
    assert r.stderr == ""  # nothing but psql's own output
    down = tootpipe("psql", "-c", "SELECT 1", env={**ENV, "TOOTPIPE_STATE_DIR": str(STATE / "nothing-running")})
    assert down.returncode == 2 and "tootpipe services up" in down.stderr
    assert not (STATE / "nothing-running" / "services.json").exists()  # nothing was started


def _cmdline(proc_dir) -> str:
    try:
        return (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
