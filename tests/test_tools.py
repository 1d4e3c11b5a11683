"""The commands a user of such a pipeline reaches for: psql on the project database, JupyterLab on the
notebooks."""
import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, STATE, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}


def tootpipe(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tootpipe.cli", *args], cwd=ROOT, env=env or ENV,
                          capture_output=True, text=True, timeout=120)


def test_psql_runs_the_usual_sql_on_the_project_database_and_starts_nothing(services_up):
    from tootpipe import db
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_lab_opens_every_py_notebook_as_a_notebook(services_up):
    port, token = _free_port(), "t" + os.urandom(8).hex()
    proc = subprocess.Popen([sys.executable, "-m", "tootpipe.cli", "lab", "--no-browser", f"--port={port}",
                             f"--IdentityProvider.token={token}"], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def get(path):
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def up():
        try:
            return get("/api/status")
        except OSError:
            return None

    try:
        wait_until(up, 120, "JupyterLab to answer")
        names = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
        assert len(names) == 6
        for name in names:
            model = get(f"/api/contents/notebooks/{name}?type=notebook&content=1")
            assert model["type"] == "notebook", name
            cells = model["content"]["cells"]
            assert len(cells) > 3 and cells[0]["cell_type"] == "markdown", name
            tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
            assert len(tagged) == 1 and "params/default.yaml" in "".join(tagged[0]["source"]), name
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    left = [p for p in Path("/proc").glob("[0-9]*") if _cmdline(p).count(f"--port={port}")]
    assert not left, "JupyterLab outlived `tootpipe lab`"


def _cmdline(proc_dir) -> str:
    try:
        return (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
