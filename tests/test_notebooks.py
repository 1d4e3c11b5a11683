"""The papermill chain on the small parameter set: six notebooks, offline HTML, an index."""
import re

import pytest

from browser import Browser, chromium_path
from conftest import ROOT, STATE, isolated
from tootpipe.reports import run_notebooks

SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"

pytestmark = [pytest.mark.notebooks, pytest.mark.timeout(900)]


def small_params(tmp_path) -> str:
    """params/small.yaml with the checkpoints and models inside the suite's state folder."""
    import yaml
    tree = yaml.safe_load((ROOT / "params" / "small.yaml").read_text())
    for dotted, value in isolated().items():
        section, key = dotted.split(".")
        tree.setdefault(section, {})[key] = value
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(tree))
    return str(path)


TOKEN, PASSWORD = "tok-artefact-41c7e2", "pw-artefact-8d3f09"


def user_state(monkeypatch) -> dict:
    """What belongs to the user: model versions, report runs, checkpoints and, when the user's own embedded
    services are running, their topic offsets and table row counts."""
    from tootpipe import config, db, kafka_io, pipeline, services
    snap = {name: sorted(p.name for p in (ROOT / folder).glob("*")) for name, folder in
            (("models", "models/sentiment"), ("reports", "reports"), ("checkpoints", ".tootpipe/checkpoints"))}
    with monkeypatch.context() as m:
        m.delenv("TOOTPIPE_STATE_DIR", raising=False)
        params = config.load(ROOT / "params" / "default.yaml", use_env=False)
        try:
            endpoints = services.endpoints(params)
        except services.ServiceError:
            return snap  # the user's services are down: nothing of theirs can change but the files above
        snap["offsets"] = kafka_io.end_offsets(endpoints.bootstrap_servers, params.kafka.topic)
        snap["tables"] = db.table_counts(endpoints.database_url, pipeline.tables())
    return snap


def test_chain_writes_offline_reports(services_up, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("MASTODON_ACCESS_TOKEN", TOKEN)  # known secrets: no artefact of the run may hold them
    monkeypatch.setenv("DB_PASSWORD", PASSWORD)
    before = user_state(monkeypatch)
    code, out = run_notebooks(small_params(tmp_path), keep_services=True, reports_dir=str(tmp_path))
    assert code == 0
    assert user_state(monkeypatch) == before, "the notebook test changed the user's own state"
    console = capfd.readouterr()
    lines = (console.out + console.err).strip().splitlines()
    assert len(lines) == 8 and all(line.startswith("run_all: ") for line in lines), lines  # one screen
    assert "details in" in lines[0] and "report" in lines[-1]
    assert not any(w in console.out + console.err for w in ("Traceback", "WARN", "BrokenPipe"))
    assert_no_secret_in(tmp_path, STATE)
    html = sorted(p.name for p in out.glob("*.html"))
    assert html == ["01_ingest.html", "02_stream.html", "03_batch.html", "04_analytics.html", "05_sentiment.html",
                    "06_visualise.html", "index.html"]
    index = (out / "index.html").read_text()
    assert index.count("<tr class='ok'>") == 6
    assert list(out.glob("*.png")), "no figures in the gallery"
    for page in out.glob("0*.html"):
        assert not re.search(r"<script[^>]+src=\"https?://", page.read_text()), f"{page.name} loads a CDN script"
    assert (tmp_path / "latest").resolve() == out.resolve()
    check_in_a_real_browser(out)


def assert_no_secret_in(*folders):
    """Neither the known token and password nor the generated database passwords appear in any file written
    (reports, logs, checkpoints, broker and Spark files), except the 0600 file that holds the passwords."""
    import json
    secrets = {TOKEN, PASSWORD, *json.loads((STATE / "pg-passwords.json").read_text()).values()}
    for folder in folders:
        for path in folder.rglob("*"):
            if not path.is_file() or path.name == "pg-passwords.json" or path.is_symlink():
                continue
            try:
                data = path.read_bytes()
            except PermissionError:
                continue
            leaked = [s for s in secrets if s.encode() in data]
            assert not leaked, f"{path} holds a secret"


def check_in_a_real_browser(out):
    """Every report opens from disk in headless Chromium with no failed request and no console error."""
    binary = chromium_path()
    assert binary, "chromium is missing: scripts/system-deps.sh installs it"
    with Browser(binary) as browser:
        for page in sorted(out.glob("*.html")):
            r = browser.load(page, SCREENSHOTS / f"{page.stem}.png")
            assert r.console_errors == [], f"{page.name}: console errors {r.console_errors}"
            assert r.failed_requests == [], f"{page.name}: failed requests {r.failed_requests}"
            assert r.screenshot.stat().st_size > 10_000, f"{page.name}: blank screenshot"
            assert r.title != "Notebook" and r.title.split()[0] in (page.stem[:2], "tootpipe"), r.title
    index = (SCREENSHOTS / "index.png")
    assert index.exists()


def test_a_failing_notebook_stops_the_chain_and_names_the_cell(services_up, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("source:\n  kind: replay\n  replay_path: does/not/exist.jsonl\n")
    code, out = run_notebooks(str(bad), only=["01", "02"], keep_services=True, reports_dir=str(tmp_path))
    assert code == 1
    assert (out / "01_ingest.html").exists() and not (out / "02_stream.ipynb").exists()
    assert "FAILED in 01_ingest, cell" in (out / "index.html").read_text()


def test_invalid_parameters_stop_before_any_notebook(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka:\n  partitons: 3\n")
    code, out = run_notebooks(str(bad), reports_dir=str(tmp_path))
    assert code == 2 and out is None


def test_without_a_shared_driver_each_notebook_runs_on_its_own(services_up, tmp_path, monkeypatch):
    """run_all's one driver JVM is a speed-up, not a requirement: when it cannot start, the run goes on and the
    log says why."""
    from tootpipe import reports
    from tootpipe.spark_session import JavaMissing

    def no_java(_params):
        raise JavaMissing("no java here (test)")
    monkeypatch.setattr(reports, "shared_driver", no_java)
    code, out = run_notebooks(small_params(tmp_path), only=["01"], keep_services=True, reports_dir=str(tmp_path))
    assert code == 0 and (out / "01_ingest.html").exists()
    logs = sorted((STATE / "logs").glob(f"{out.name}.log"))
    assert logs and "no shared Spark driver (JavaMissing: no java here (test))" in logs[0].read_text()
