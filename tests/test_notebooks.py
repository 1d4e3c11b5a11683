"""The papermill chain on the small parameter set: six notebooks, offline HTML, an index."""
import re

import pytest

from tootpipe.reports import run_notebooks

pytestmark = [pytest.mark.notebooks, pytest.mark.timeout(900)]


def test_chain_writes_offline_reports(services_up, tmp_path):
    code, out = run_notebooks("params/small.yaml", keep_services=True, reports_dir=str(tmp_path))
    assert code == 0
    html = sorted(p.name for p in out.glob("*.html"))
    assert html == ["01_ingest.html", "02_stream.html", "03_batch.html", "04_analytics.html", "05_sentiment.html",
                    "06_visualise.html", "index.html"]
    index = (out / "index.html").read_text()
    assert index.count("<tr class='ok'>") == 6
    assert list(out.glob("*.png")), "no figures in the gallery"
    for page in out.glob("0*.html"):
        assert not re.search(r"<script[^>]+src=\"https?://", page.read_text()), f"{page.name} loads a CDN script"
    assert (tmp_path / "latest").resolve() == out.resolve()


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
