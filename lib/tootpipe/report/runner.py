"""Run the numbered notebooks in order with papermill and write offline reports.

Writes `reports/<run-id>/NN_name.ipynb` and `.html` (no CDN scripts; figures inlined), a gallery of figures and an
`index.html` (run id, parameters, git commit, status and time per notebook, row counts), and points
`reports/latest` at the run. Stops at the first failing notebook, keeps its partial notebook and HTML, and says
which notebook and cell failed. The kernels share one Spark driver JVM started for the run
(:func:`tootpipe.spark.session.shared_driver`), each with a SparkContext of its own.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from tootpipe.core.config import Params, ParamsError, load, project_root, redact
from tootpipe.core.errors import NotebookFailed
from tootpipe.postgres.db import table_counts
from tootpipe.report.html import figures, index_page, to_html
from tootpipe.services import embedded as services
from tootpipe.spark.session import shared_driver

__all__ = ["run_notebooks", "notebook_paths", "NotebookRun", "NotebookFailed", "shown_path", "new_run_dir"]


def notebook_paths(only: list[str] | None = None) -> list[Path]:
    from tootpipe.pipeline import STAGES  # lazy: pyspark
    paths = [project_root() / "notebooks" / f"{s.notebook}.py" for s in STAGES]
    if only:
        paths = [p for p in paths if p.name[:2] in only]
    return paths


class _QuietConsole:
    """While a run lasts, the process's stdout and stderr (and so the kernels', the JVM's and Spark workers',
    which inherit them) go to a log file; :meth:`say` writes to the real console."""

    def __init__(self, log: Path, quiet: bool) -> None:
        self.log, self.quiet = log, quiet
        self._saved: list[int] = []
        self.console = sys.stdout

    def __enter__(self):
        if self.quiet:
            self.log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            sys.stdout.flush()
            sys.stderr.flush()
            self._saved = [os.dup(1), os.dup(2)]
            self.console = os.fdopen(os.dup(self._saved[0]), "w", buffering=1)
            fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
        return self

    def say(self, line: str) -> None:
        print(line, file=self.console, flush=True)

    @staticmethod
    def detail(line: str) -> None:
        """A line for the log (file descriptor 2, where the kernels' and the JVM's output goes)."""
        sys.stderr.flush()
        os.write(2, (line + "\n").encode())

    def __exit__(self, *exc) -> None:
        if self._saved:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(self._saved[0], 1)
            os.dup2(self._saved[1], 2)
            for fd in self._saved:
                os.close(fd)
            self.console.close()
            self._saved = []


def shown_path(path: Path) -> str:
    """A path as the rendered notebooks show it: relative to the project (the kernels' working folder) when inside
    it, so that no report holds the absolute path of the clone."""
    try:
        return str(path.relative_to(project_root()))
    except ValueError:
        return str(path)


def run_notebooks(params_file: str, only: list[str] | None = None, keep_services: bool = False,
                  reports_dir: str | None = None, quiet: bool = True) -> tuple[int, Path | None]:
    """Execute the notebooks; returns (exit code, run folder). With `quiet`, the console shows one line per
    notebook (name, status, seconds), the failing cell and its error if one fails, and the report's path;
    everything else (kernel, JVM and Spark output) goes to `.tootpipe/logs/<run>.log`, named on the console."""
    try:
        params = load(params_file)
    except ParamsError as exc:
        print(f"run_all: {exc}", file=sys.stderr)
        return 2, None
    params_path = shown_path(Path(params_file).resolve() if Path(params_file).exists() else project_root() / params_file)
    base = params.path(reports_dir or params.reports.dir)
    out_dir = new_run_dir(base, params.run.name)
    log = services.state_dir() / "logs" / f"{out_dir.name}.log"
    with _QuietConsole(log, quiet) as console:
        if quiet:
            console.say(f"run_all: {len(notebook_paths(only))} notebooks, details in {log}")
        return _run(params, params_path, base, out_dir, only, keep_services, console)


def new_run_dir(base: Path, name: str) -> Path:
    """`<base>/<UTC time>-<name>/`, created: the folder of one run's reports."""
    out = base / (datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + name)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _run(params, params_path, base, out_dir, only, keep_services, console) -> tuple[int, Path | None]:
    run = NotebookRun(params, params_path, base, out_dir, console)
    failure: NotebookFailed | None = None
    try:
        with run:
            for py in notebook_paths(only):
                failure = run.execute(py)
                if failure:
                    break
        index = run.finish(failure)
    finally:
        if not keep_services:
            services.down()
    if failure:
        console.say(f"run_all: {failure} (partial notebook and HTML kept in {out_dir})")
        return 1, out_dir
    console.say(f"run_all: report {index}")
    return 0, out_dir


class NotebookRun:
    """One run of notebooks into `<reports>/<run-id>/`: entered, the services are up and one shared Spark driver
    JVM serves every kernel; :meth:`execute` runs one notebook (its rendered `.ipynb`, HTML and figures beside it);
    :meth:`finish` writes the index and points `latest` at the run. `run_notebooks` and the orchestration's
    resource both run notebooks through it."""

    def __init__(self, params: Params, params_path: str, base: Path, out_dir: Path, console) -> None:
        self.params, self.params_path, self.base, self.out_dir, self.console = params, params_path, base, out_dir, console
        self.results: list[dict] = []
        self.failure: NotebookFailed | None = None
        self.endpoints = None
        self._stack = contextlib.ExitStack()
        self._release = lambda: None

    def __enter__(self) -> "NotebookRun":
        self.endpoints = services.up(self.params)
        self._release = _one_driver_for_the_run(self.params, self._stack, self.console)
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def execute(self, py: Path) -> NotebookFailed | None:
        """Execute one notebook; its result is appended to :attr:`results`; a failure is returned."""
        result, failure = _execute(py, self.params_path, self.out_dir, self._release)
        self.results.append(result)
        self.failure = failure or self.failure
        self.console.say(f"run_all: {py.stem:14} {result['status']:6} {result['seconds']:6.1f} s")
        return failure

    def finish(self, failure: NotebookFailed | None = None) -> Path:
        """The run's index.html (row counts of every table of the contract) and `latest` pointing at the run."""
        from tootpipe.pipeline import tables  # lazy: pyspark
        try:
            counts = table_counts(self.endpoints.database_url, tables())
        except Exception as exc:  # the index must still be written when the database is gone
            counts = {"(database unavailable)": str(exc)}
        status = f"FAILED in {failure.notebook}, cell {failure.cell}" if failure else "ok"
        index = index_page(self.out_dir, self.out_dir.name, self.params, self.results, counts, status)
        latest = self.base / "latest"
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(self.out_dir.name)
        return index


def _one_driver_for_the_run(params: Params, stack: contextlib.ExitStack, console: _QuietConsole):
    """Start one Spark driver JVM that every kernel of the run attaches to (:func:`shared_driver`: no JVM start and
    no cold JIT per notebook); returns the function that stops what a kernel left. Without one (no Java, say),
    each kernel starts its own and a notebook that needs Spark says why in its failing cell."""
    try:
        return stack.enter_context(shared_driver(params))
    except Exception as exc:  # noqa: BLE001 - the notebooks report it where it matters
        console.detail(f"run_all: no shared Spark driver ({type(exc).__name__}: {exc}); each notebook starts "
                       "its own")
        return lambda: None


def _execute(py: Path, params_path: str, out_dir: Path, release_spark) -> tuple[dict, NotebookFailed | None]:
    """Execute one notebook with papermill into `out_dir` (rendered to HTML, its figures written); (result, failure)."""
    import jupytext  # lazy: jupytext
    import papermill as pm  # lazy: papermill
    failure = None
    nb = jupytext.read(py)
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    nb.metadata.setdefault("language_info", {"name": "python"})
    out = out_dir / (py.stem + ".ipynb")
    t0 = time.monotonic()
    result = {"name": py.stem, "html": py.stem + ".html", "status": "ok", "figures": []}
    try:
        pm.execute_notebook(nb, str(out), parameters={"params_file": params_path},
                            cwd=str(project_root()), kernel_name="python3", progress_bar=False,
                            # the JVM's and Spark workers' own stderr (JDK notices, worker shutdown
                            # noise) goes to the console, not into the report; Python output still does
                            extra_arguments=["--IPKernelApp.capture_fd_output=False"])
    except pm.PapermillExecutionError as exc:
        error = redact(f"{exc.ename}: {exc.evalue}")
        result.update(status="failed", cell=exc.exec_count, error=error[:500])
        failure = NotebookFailed(py.stem, exc.exec_count, error)
    release_spark()  # a kernel that left its SparkContext running must not hold the next one back
    result["seconds"] = time.monotonic() - t0
    if out.exists():
        to_html(out)
        result["figures"] = figures(out, out_dir)
    return result, failure
