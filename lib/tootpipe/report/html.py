"""The offline HTML of a run: each executed notebook rendered without any CDN script (figures inlined), its figures
written beside it, and the run's `index.html` (status and time per notebook, row counts, the figures captioned by
their titles and linked to their cells, the parameters redacted)."""
from __future__ import annotations

import base64
import html
import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from tootpipe.core.config import Params, project_root, redact

__all__ = ["to_html", "figures", "index_page"]


def to_html(ipynb: Path) -> Path:
    import nbformat  # lazy: nbformat
    from nbconvert import HTMLExporter  # lazy: nbconvert
    exporter = HTMLExporter(template_file=str(Path(__file__).parent / "templates" / "offline.html.j2"))
    nb = nbformat.read(ipynb, as_version=4)
    heading = next((line.lstrip("# ").strip() for c in nb.cells if c.cell_type == "markdown"
                    for line in c.source.splitlines() if line.startswith("# ")), ipynb.stem)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": heading}})  # the page's <title>
    out = ipynb.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out


def figures(ipynb: Path, out_dir: Path) -> list[dict]:
    """Each figure of an executed notebook written as a PNG beside it: {file, caption, href}. The caption is the
    figure's title (``plots`` puts it in the output's metadata), else the heading of the section it is in; `href`
    points at its cell in the rendered notebook."""
    import nbformat  # lazy: nbformat
    nb = nbformat.read(ipynb, as_version=4)
    figures, section = [], ipynb.stem
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            section = next((line.lstrip("#").strip() for line in reversed(cell.source.splitlines())
                            if line.startswith("#")), section)
        for j, output in enumerate(cell.get("outputs", [])):
            png = output.get("data", {}).get("image/png")
            if png:
                name = f"{ipynb.stem}_cell{i:02d}_{j}.png"
                (out_dir / name).write_bytes(base64.b64decode(png))
                title = output.get("metadata", {}).get("image/png", {}).get("title")
                anchor = f"#cell-id={cell['id']}" if cell.get("id") else ""
                figures.append({"file": name, "caption": title or section, "href": f"{ipynb.stem}.html{anchor}"})
    return figures


def _git_commit() -> str:
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=project_root(), capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=project_root(),
                               capture_output=True, text=True).stdout.strip()
        return (r.stdout.strip() or "unknown") + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


def index_page(out_dir: Path, run_id: str, params: Params, results: list[dict], counts: dict, status: str) -> Path:
    from tootpipe.pipeline import STAGES  # lazy: pyspark
    stages = {s.notebook: s for s in STAGES}

    def stage(name: str) -> str:
        s = stages.get(Path(name).stem)
        return "<td></td><td></td>" if s is None else \
            f"<td>{html.escape(s.title)}</td><td>{html.escape(', '.join(s.writes) or '-')}</td>"
    rows = "".join(
        f"<tr class='{r['status']}'><td><a href='{html.escape(r['html'])}'>{html.escape(r['name'])}</a></td>"
        f"{stage(r['name'])}"
        f"<td>{r['status']}{(' (cell ' + str(r['cell']) + ': ' + html.escape(r['error']) + ')') if r.get('error') else ''}"
        f"</td><td>{r['seconds']:.1f}</td></tr>" for r in results)
    # a count, or the error that stood for them (escaped and redacted: it may quote a server or a URL)
    count_rows = "".join(f"<tr><td>{html.escape(t)}</td><td>{'—' if n is None else html.escape(redact(str(n)))}"
                         "</td></tr>" for t, n in counts.items())
    gallery = "".join(f"<figure><a href='{html.escape(f['href'])}'><img src='{html.escape(f['file'])}' "
                      f"alt='{html.escape(f['caption'])}'></a><figcaption><a href='{html.escape(f['href'])}'>"
                      f"{html.escape(f['caption'])}</a> · {html.escape(r['name'])}</figcaption></figure>"
                      for r in results for f in r["figures"])
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>tootpipe run {html.escape(run_id)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:75rem;color:#222}}table{{border-collapse:collapse;margin:1rem 0}}
td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}tr.failed td{{background:#fde2e2}}tr.ok td:nth-child(2){{color:#1b7a3a}}
.gallery{{display:flex;flex-wrap:wrap;gap:1rem}}figure{{margin:0;width:22rem}}img{{width:100%;border:1px solid #ddd}}
figcaption{{font-size:.75rem;color:#666}}pre{{background:#f6f6f6;padding:1rem;overflow:auto}}</style></head><body>
<h1>tootpipe run <code>{html.escape(run_id)}</code>: {html.escape(status)}</h1>
<p>Git commit <code>{html.escape(_git_commit())}</code> · finished {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC ·
{sum(r['seconds'] for r in results):.0f} s in notebooks</p>
<h2>Notebooks</h2><table><tr><th>notebook</th><th>stage</th><th>writes</th><th>status</th><th>seconds</th></tr>{rows}</table>
<h2>Row counts</h2><table><tr><th>table</th><th>rows</th></tr>{count_rows}</table>
<h2>Figures</h2><div class="gallery">{gallery or '<p>No figures.</p>'}</div>
<h2>Parameters</h2><pre>{html.escape(json.dumps(redact(params.model_dump()), indent=2))}</pre>
</body></html>"""
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
