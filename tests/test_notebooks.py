"""The papermill chain on the small parameter set: six notebooks, offline HTML, an index; reruns after new toots,
and each notebook alone in a fresh kernel."""
import contextlib
import os
import re
import subprocess
import sys
import types

import pytest
from browser import Browser, chromium_path
from conftest import ROOT, STATE, isolated

from tootpipe.report.runner import run_notebooks

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
    from tootpipe import kafka, pipeline
    from tootpipe.core import config
    from tootpipe.postgres import db
    from tootpipe.services import embedded as services
    snap = {name: sorted(p.name for p in (ROOT / folder).glob("*")) for name, folder in
            (("models", "models/sentiment"), ("reports", "reports"), ("checkpoints", ".tootpipe/checkpoints"))}
    with monkeypatch.context() as m:
        m.delenv("TOOTPIPE_STATE_DIR", raising=False)
        params = config.load(ROOT / "params" / "default.yaml", use_env=False)
        try:
            endpoints = services.endpoints(params)
        except services.ServiceError:
            return snap  # the user's services are down: nothing of theirs can change but the files above
        snap["offsets"] = kafka.end_offsets(endpoints.bootstrap_servers, params.kafka.topic)
        snap["tables"] = db.table_counts(endpoints.database_url, pipeline.tables())
    return snap


@contextlib.contextmanager
def console_to(path):
    """The process's stdout and stderr (file descriptors 1 and 2) into a file, as a terminal would show them."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


@pytest.fixture(scope="module")
def chain(services_up, tmp_path_factory):
    """The chain on the small parameters, once for this module: what later tests rerun on."""
    tmp = tmp_path_factory.mktemp("chain")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MASTODON_ACCESS_TOKEN", TOKEN)  # known secrets: no artefact of the run may hold them
        mp.setenv("DB_PASSWORD", PASSWORD)
        before = user_state(mp)
        params_file = small_params(tmp)
        with console_to(tmp / "console.txt"):
            code, out = run_notebooks(params_file, keep_services=True, reports_dir=str(tmp))
        after = user_state(mp)
    return types.SimpleNamespace(code=code, out=out, tmp=tmp, params_file=params_file, before=before, after=after,
                                 console=(tmp / "console.txt").read_text())


def test_chain_writes_offline_reports(chain):
    code, out, tmp_path = chain.code, chain.out, chain.tmp
    assert code == 0, chain.console
    assert chain.after == chain.before, "the notebook test changed the user's own state"
    lines = chain.console.strip().splitlines()
    assert len(lines) == 8 and all(line.startswith("run_all: ") for line in lines), lines  # one screen
    assert "details in" in lines[0] and "report" in lines[-1]
    assert not any(w in chain.console for w in ("Traceback", "WARN", "BrokenPipe"))
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
    check_gallery(out)
    check_in_a_real_browser(out)


def check_gallery(out):
    """Each figure of the index is captioned with the chart's title and links to its cell in its notebook."""
    import html as html_lib
    index = (out / "index.html").read_text()
    figures = re.findall(r"<figure><a href='([^']+)'><img src='([^']+)'[^>]*></a><figcaption><a href='[^']+'>"
                         r"([^<]+)</a>", index)
    assert len(figures) == len(list(out.glob("*.png"))), "a figure of the run is missing from the gallery"
    captions = {html_lib.unescape(c) for _, _, c in figures}
    assert {"Toots per minute (stream windows)", "Sentiment of toots", "Streaming query health"} <= captions
    assert not any(c.endswith(".png") for c in captions), captions
    for href, _, _ in figures:
        page, anchor = href.split("#")
        assert f'id="{html_lib.unescape(anchor)}"' in (out / page).read_text(), href


def test_rendered_notebooks_show_project_relative_parameter_paths(services_up, tmp_path):
    """The injected parameters cell names params/small.yaml as the project does, never the clone's own path."""
    code, out = run_notebooks("params/small.yaml", only=["01"], keep_services=True, reports_dir=str(tmp_path))
    assert code == 0
    import nbformat
    nb = nbformat.read(out / "01_ingest.ipynb", as_version=4)
    injected = [c.source for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and 'params_file = "params/small.yaml"' in injected[0], injected
    assert str(ROOT) not in injected[0]


def publish_new_toots(params_file: str, seed: int, tmp_path) -> None:
    """As a user adds toots: `tootpipe sample` to a file, then `tootpipe ingest --source replay` of it."""
    new = tmp_path / f"new-{seed}.jsonl"
    cli = [sys.executable, "-m", "tootpipe.cli", "--params", params_file]
    subprocess.run([*cli, "sample", "--n", "100", "--seed", str(seed), "--out", str(new)], check=True,
                   capture_output=True, timeout=120)
    subprocess.run([*cli, "ingest", "--source", "replay", "--replay", str(new)], check=True, capture_output=True,
                   timeout=300)


def scores(params_file: str) -> tuple:
    """(posts, {uri: (model_version, scored_at)} of mastodon_sentiments, model versions on disk)."""
    from tootpipe.core import config
    from tootpipe.postgres import db
    from tootpipe.services import embedded as services
    params = config.load(params_file, use_env=False)
    url = services.endpoints(params).database_url
    posts = set(db.query_df(url, "SELECT uri FROM mastodon_posts").uri)
    rows = db.query_df(url, "SELECT uri, model_version, scored_at FROM mastodon_sentiments")
    models = sorted(p.name for p in params.path(params.sentiment.model_dir).glob("*") if p.is_dir())
    return posts, {r.uri: (r.model_version, r.scored_at) for r in rows.itertuples()}, models


def assert_scored_exactly_the_new_posts(before: tuple, after: tuple) -> None:
    posts_before, scored_before, models_before = before
    posts_after, scored_after, models_after = after
    new = posts_after - posts_before
    assert new, "the new toots reached no post"
    assert set(scored_after) == posts_after, "a post has no sentiment row (none missed: scored or unsupported)"
    assert {u: scored_after[u] for u in scored_before} == scored_before, "a post was scored twice"
    assert models_after == models_before, "the models were trained again instead of reused"


def test_the_chain_runs_again_after_new_toots(chain):
    """`make run`, new toots, `make run` again: the second run succeeds, reuses the models and scores exactly the
    new posts."""
    assert chain.code == 0
    publish_new_toots(chain.params_file, 77, chain.tmp)
    before = scores(chain.params_file)
    code, out = run_notebooks(chain.params_file, keep_services=True, reports_dir=str(chain.tmp / "second"))
    assert code == 0, (out / "index.html").read_text() if out else "no run folder"
    assert_scored_exactly_the_new_posts(before, scores(chain.params_file))


def test_each_notebook_runs_alone_in_a_fresh_kernel(chain):
    """What a JupyterLab user does with Run All: each notebook in a kernel of its own, working folder notebooks/,
    top to bottom, after the chain ran (nothing any notebook needs comes from another one's kernel)."""
    import jupytext
    import nbclient
    assert chain.code == 0
    for py in sorted((ROOT / "notebooks").glob("0*.py")):
        nb = jupytext.read(py)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(cells) == 1, f"{py.name}: one parameters cell"
        cells[0].source = f"params_file = {chain.params_file!r}"  # as a user edits it (the suite's own state)
        try:
            nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                    resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
        except nbclient.exceptions.CellExecutionError as exc:
            pytest.fail(f"{py.name} alone: {str(exc)[-1500:]}")
    posts, scored, _ = scores(chain.params_file)
    assert set(scored) == posts, "a post has no sentiment row"


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
    from tootpipe.report import runner as reports
    from tootpipe.spark.session import JavaMissing

    def no_java(_params):
        raise JavaMissing("no java here (test)")
    monkeypatch.setattr(reports, "shared_driver", no_java)
    code, out = run_notebooks(small_params(tmp_path), only=["01"], keep_services=True, reports_dir=str(tmp_path))
    assert code == 0 and (out / "01_ingest.html").exists()
    logs = sorted((STATE / "logs").glob(f"{out.name}.log"))
    assert logs and "no shared Spark driver (JavaMissing: no java here (test))" in logs[0].read_text()
