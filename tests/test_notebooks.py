"""The notebook chain on the small parameter set, run as the orchestrator runs it (Dagster's `execute_in_process`,
the project's papermill runner inside): every asset materialized, the asset checks, offline HTML and an index; a
second run after new toots, a third that reuses; a corrupted table failing its check; a failing notebook failing its
asset; each notebook alone in a fresh kernel; `run_all` itself on one notebook."""
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


def small_params(tmp_path, reports: bool = False) -> str:
    """params/small.yaml with the checkpoints and models inside the suite's state folder (and, with `reports`, the
    reports in `tmp_path`)."""
    import yaml
    tree = yaml.safe_load((ROOT / "params" / "small.yaml").read_text())
    for dotted, value in isolated({"reports.dir": str(tmp_path)} if reports else {}).items():
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


def materialize(params_file: str, selection: list[str] | None = None, job: str = "pipeline"):
    """The orchestrated pipeline (or `selection`'s assets, or another job) in this process, as a Dagster run does."""
    import dagster as dg

    from tootpipe.orchestration.definitions import build
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TOOTPIPE_PARAMS", params_file)  # what `tootpipe orchestrate` sets for its resources
        return build(params_file).resolve_job_def(job).execute_in_process(
            instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
            asset_selection=[dg.AssetKey(k) for k in selection] if selection else None)


def materializations(result) -> dict:
    """asset key -> the metadata of its materialization in `result` (plain values)."""
    return {e.asset_key.to_user_string(): {k: getattr(v, "value", v) for k, v in e.materialization.metadata.items()}
            for e in result.get_asset_materialization_events()}


@pytest.fixture(scope="module", autouse=True)
def one_driver(services_up):
    """One shared Spark driver JVM for the module's runs, one after another, as in a long-lived orchestrator
    process: each run's notebooks attach to it warm (each notebook still gets a SparkContext of its own). The
    notebooks run alone in fresh kernels do not (:func:`test_each_notebook_runs_alone_in_a_fresh_kernel`)."""
    from tootpipe.core import config
    from tootpipe.spark.session import shared_driver
    with shared_driver(config.load(ROOT / "params" / "small.yaml", use_env=False)):
        yield


@pytest.fixture(scope="module")
def chain(services_up, tmp_path_factory):
    """The chain on the small parameters, once for this module, materialized in-process by Dagster: what later
    tests rerun on."""
    tmp = tmp_path_factory.mktemp("chain")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MASTODON_ACCESS_TOKEN", TOKEN)  # known secrets: no artefact of the run may hold them
        mp.setenv("DB_PASSWORD", PASSWORD)
        before = user_state(mp)
        params_file = small_params(tmp, reports=True)
        with console_to(tmp / "console.txt"):
            result = materialize(params_file)
        after = user_state(mp)
    return types.SimpleNamespace(result=result, tmp=tmp, params_file=params_file, before=before, after=after,
                                 out=(tmp / "latest").resolve(), console=(tmp / "console.txt").read_text())


def test_the_chain_materializes_every_asset_with_its_checks_and_writes_offline_reports(chain):
    from tootpipe.orchestration.assets import owners
    assert chain.result.success, chain.console[-3000:]
    out, tmp_path = chain.out, chain.tmp
    assert chain.after == chain.before, "the notebook test changed the user's own state"
    made = materializations(chain.result)
    assert set(made) == set(owners()), "an asset of the contract was not materialized"
    for key, meta in made.items():
        assert meta["seconds"] > 0 and meta["notebook"].endswith(".html"), (key, meta)
        assert key in ("kafka_topic", "report") or meta.get("rows") is not None, (key, meta)
    assert made["toots_clean"]["reused"] is False and made["daily_toot_counts"]["reused"] is False
    checks = {c.check_name: c.passed for c in chain.result.get_asset_check_evaluations()}
    assert checks == {"windows_equal_a_recount": True, "no_duplicate_uris": True, "stream_batch_reconciliation": True}
    assert_no_secret_in(tmp_path, STATE)
    html = sorted(p.name for p in out.glob("*.html"))
    assert html == ["01_ingest.html", "02_stream.html", "03_batch.html", "04_analytics.html", "05_sentiment.html",
                    "06_visualise.html", "index.html"]
    index = (out / "index.html").read_text()
    assert index.count("<tr class='ok'>") == 6
    assert list(out.glob("*.png")), "no figures in the gallery"
    for page in out.glob("0*.html"):
        assert not re.search(r"<script[^>]+src=\"https?://", page.read_text()), f"{page.name} loads a CDN script"
    assert out.name.endswith("-dagster") and out.parent == tmp_path
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


def test_run_all_prints_one_screen_and_shows_project_relative_parameter_paths(services_up, tmp_path):
    """`run_all` (what `make run` runs), on notebook 01: its console is one line per notebook plus the first and
    the last, nothing else; the injected parameters cell names params/small.yaml, never the clone's own path."""
    with console_to(tmp_path / "console.txt"):
        code, out = run_notebooks("params/small.yaml", only=["01"], keep_services=True, reports_dir=str(tmp_path))
    console = (tmp_path / "console.txt").read_text()
    assert code == 0, console
    lines = console.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("run_all: ") for line in lines), lines
    assert "details in" in lines[0] and "01_ingest" in lines[1] and "report" in lines[-1]
    assert not any(w in console for w in ("Traceback", "WARN", "BrokenPipe"))
    assert (tmp_path / "latest").resolve() == out.resolve()
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


def test_the_chain_runs_again_after_new_toots_then_reuses_what_nothing_changed(chain):
    """The chain, new toots, the chain again: the second run succeeds, reuses the models and scores exactly the
    new posts; a third run of the batch stages with nothing new reuses clean and the analytics."""
    assert chain.result.success
    publish_new_toots(chain.params_file, 77, chain.tmp)
    before = scores(chain.params_file)
    second = materialize(chain.params_file)
    assert second.success, [e.message for e in second.all_events if e.is_failure][:3]
    assert_scored_exactly_the_new_posts(before, scores(chain.params_file))
    assert materializations(second)["toots_clean"]["reused"] is False  # new raw rows: computed again
    third = materialize(chain.params_file, selection=_stage_keys("03_batch", "04_analytics"))
    made = materializations(third)
    assert third.success and made["toots_clean"]["reused"] is True and made["daily_toot_counts"]["reused"] is True
    assert set(made) == set(_stage_keys("03_batch", "04_analytics"))


def _stage_keys(*notebooks: str) -> list[str]:
    from tootpipe.orchestration.assets import owners
    return [k for k, nb in owners().items() if nb in notebooks]


def test_a_corrupted_table_fails_its_check_and_the_others_pass(chain):
    """The `checks` job (the invariants alone, as from the UI) on a window count made wrong behind the pipeline's
    back: its check fails, naming it; the table is put back after."""
    from tootpipe.core import config
    from tootpipe.postgres import db
    from tootpipe.services import embedded as services
    assert chain.result.success
    url = services.endpoints(config.load(chain.params_file, use_env=False)).database_url
    bump = "UPDATE streamed_toot_counts SET cnt = cnt + %s WHERE window_start = (SELECT min(window_start) FROM " \
           "streamed_toot_counts WHERE cnt > 0)"
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute(bump, (1,))
    try:
        result = materialize(chain.params_file, job="checks")
    finally:
        with db.transaction(url) as conn, conn.cursor() as cur:
            cur.execute(bump, (-1,))
    evaluations = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert set(evaluations) == {"windows_equal_a_recount", "no_duplicate_uris", "stream_batch_reconciliation"}
    failed = evaluations.pop("windows_equal_a_recount")
    assert not failed.passed and "minute windows differ from a recount" in failed.metadata["failures"].value
    assert all(c.passed for c in evaluations.values())


def test_a_failing_notebook_fails_its_asset_with_the_cell_and_the_error_and_the_run_stops(services_up, tmp_path):
    import yaml
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"source": {"kind": "replay", "replay_path": "does/not/exist.jsonl"},
                                   "reports": {"dir": str(tmp_path)}, "orchestration": {"retries": 0}}))
    result = materialize(str(bad), selection=_stage_keys("01_ingest", "02_stream"))
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [e.step_key for e in failures] == ["stage_01_ingest"]
    data = failures[0].event_specific_data
    assert "01_ingest failed in cell" in data.error.message and "does/not/exist.jsonl" in data.error.message
    meta = data.user_failure_data.metadata
    assert meta["cell"].value > 0 and "FileNotFoundError" in meta["error"].value
    assert meta["notebook"].value.endswith("01_ingest.html")
    assert not materializations(result), "an asset was materialized after its stage failed"
    assert "FAILED in 01_ingest, cell" in ((tmp_path / "latest") / "index.html").read_text()


def test_each_notebook_runs_alone_in_a_fresh_kernel(chain, monkeypatch):
    """What a JupyterLab user does with Run All: each notebook in a kernel of its own, working folder notebooks/,
    top to bottom, after the chain ran (nothing any notebook needs comes from another one's kernel)."""
    import jupytext
    import nbclient
    assert chain.result.success
    for name in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET"):  # each kernel starts its own JVM, as in Lab
        monkeypatch.delenv(name, raising=False)
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
