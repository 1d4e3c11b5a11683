"""`tootpipe lab`: JupyterLab opens the notebooks' .py files as notebooks on a click, without the news prompt, through
the environment's own settings overrides (never the user's settings)."""
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
from browser import Browser, chromium_path
from conftest import ROOT

from tootpipe.services.procs import free_port

SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"


def test_lab_overrides_are_merged_into_the_environments_settings(tmp_path):
    """Our keys set, every other plugin's and key's setting kept, and a second call changes nothing."""
    from tootpipe.cli import lab_overrides
    path = tmp_path / "settings" / "overrides.json"
    path.parent.mkdir()
    path.write_text(json.dumps({
        "@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"markdown": "Jupytext Notebook"},
                                                    "autosave": False},
        "@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"}}))
    assert lab_overrides(str(tmp_path)) == path
    got = json.loads(path.read_text())
    assert got["@jupyterlab/apputils-extension:themes"] == {"theme": "JupyterLab Dark"}
    docs = got["@jupyterlab/docmanager-extension:plugin"]
    assert docs == {"defaultViewers": {"markdown": "Jupytext Notebook", "python": "Jupytext Notebook"},
                    "autosave": False}
    assert got["@jupyterlab/apputils-extension:notification"] == {"fetchNews": "false", "checkForUpdates": False}
    lab_overrides(str(tmp_path))
    assert json.loads(path.read_text()) == got


def _wait_http(url: str, proc, log, timeout: float = 180) -> None:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        assert proc.poll() is None, f"tootpipe lab exited: {log.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"JupyterLab did not answer within {timeout} s: {log.read_text()[-2000:]}")


OPEN_06 = """(() => { const item = [...document.querySelectorAll('.jp-DirListing-item')]
  .find(i => i.querySelector('.jp-DirListing-itemText')?.innerText.trim() === '06_visualise.py');
  item.dispatchEvent(new MouseEvent('dblclick', {bubbles: true})); return true; })()"""
LISTED = """[...document.querySelectorAll('.jp-DirListing-itemText')].some(e => e.innerText.trim() === '06_visualise.py')"""
NOTEBOOK = """document.querySelectorAll('.jp-NotebookPanel .jp-Cell').length > 5 &&
  [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell')].some(c => c.innerText.includes('params_file = '))"""
NO_EDITOR = "document.querySelectorAll('.jp-FileEditor').length === 0"
# the notebook names its kernel (the jupytext header): no "Select Kernel" dialog, the kernel starts on its own
KERNEL_STARTED = "!document.querySelector('.jp-Dialog') && !document.body.innerText.includes('No Kernel')"
NO_NEWS = "!document.body.innerText.includes('Jupyter news')"


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_lab_opens_the_notebooks_py_files_as_notebooks_on_a_click(services_up, tmp_path):
    binary = chromium_path()
    assert binary, "chromium is missing: scripts/system-deps.sh installs it"
    port, token = free_port(), uuid.uuid4().hex
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "user-settings"),  # never the user's own
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    log = tmp_path / "lab.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tootpipe.cli", "--params", "params/small.yaml", "lab",
                                 "--no-browser", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
                                 f"--IdentityProvider.token={token}",
                                 f"--FileCheckpoints.checkpoint_dir={tmp_path / 'checkpoints'}"],  # not notebooks/
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/status?token={token}", proc, log)
        names = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
        assert len(names) == 6
        for name in names:  # every notebook is served as a notebook, its parameters cell naming the defaults
            url = f"http://127.0.0.1:{port}/api/contents/notebooks/{name}?type=notebook&content=1&token={token}"
            with urllib.request.urlopen(url, timeout=30) as resp:
                model = json.loads(resp.read())
            cells = model["content"]["cells"]
            assert model["type"] == "notebook" and len(cells) > 3 and cells[0]["cell_type"] == "markdown", name
            tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
            assert len(tagged) == 1 and "params/default.yaml" in "".join(tagged[0]["source"]), name
        with Browser(binary) as browser:
            r = browser.load(f"http://127.0.0.1:{port}/lab/tree/notebooks?token={token}",
                             SCREENSHOTS / "lab_06_visualise.png", timeout=120,
                             steps=(("", LISTED), (OPEN_06, NOTEBOOK), ("", NO_EDITOR), ("", KERNEL_STARTED), ("", NO_NEWS)))
        assert r.screenshot.stat().st_size > 10_000
        # the news prompt is off by the environment's overrides, as the server hands them to the page
        url = f"http://127.0.0.1:{port}/lab/api/settings/@jupyterlab/apputils-extension:notification?token={token}"
        with urllib.request.urlopen(url, timeout=30) as resp:
            schema = json.loads(resp.read())["schema"]["properties"]
        assert schema["fetchNews"]["default"] == "false" and schema["checkForUpdates"]["default"] is False
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
