"""What Dagster loads (`dagster dev -m tootpipe.orchestration.definitions`): the assets of the stage contract, their
checks, one job over all of them with the in-process executor (one process, one shared Spark driver JVM per run),
the `notebooks` resource that runs the notebooks, the invariants as asset checks (and a `checks` job that runs them
alone), the sensor and the schedule."""
from __future__ import annotations

from pathlib import Path

import dagster as dg

from tootpipe.core.config import load
from tootpipe.core.paths import project_root
from tootpipe.orchestration.assets import asset_checks, external_assets, stage_assets
from tootpipe.orchestration.sensors import new_toots_sensor, params_file, refresh_schedule
from tootpipe.report.runner import NotebookRun, new_run_dir, shown_path
from tootpipe.steps import context

__all__ = ["defs", "build", "notebooks_resource", "services_resource"]


class _Console:
    """What NotebookRun says, into Dagster's log."""

    def __init__(self, logger) -> None:
        self.logger = logger

    def say(self, line: str) -> None:
        self.logger.info(line)

    def detail(self, line: str) -> None:
        self.logger.debug(line)


@dg.resource(description="one notebook run (reports/<run-id>/) with the services up and one shared Spark driver")
def notebooks_resource(init_context):
    path = params_file()
    params = load(path)
    base = params.path(params.reports.dir)
    out_dir = new_run_dir(base, params.run.name + "-dagster")
    full = Path(path) if Path(path).is_absolute() else project_root() / path
    with NotebookRun(params, shown_path(full), base, out_dir, _Console(init_context.log)) as run:
        try:
            yield run
        finally:
            if run.results:
                run.finish(run.failure)


@dg.resource(description="(params, endpoints) with the services up: what the asset checks read")
def services_resource(_init_context):
    return context(params_file())


def build(params_path: str | None = None) -> dg.Definitions:
    params = load(params_path or params_file())
    assets = stage_assets()
    job = dg.define_asset_job("pipeline", selection=dg.AssetSelection.all(), executor_def=dg.in_process_executor,
                              op_retry_policy=dg.RetryPolicy(max_retries=params.orchestration.retries)
                              if params.orchestration.retries else None,
                              description="every stage in order: the notebooks, as `make run` runs them")
    checks = dg.define_asset_job("checks", selection=dg.AssetSelection.all_asset_checks(),
                                 executor_def=dg.in_process_executor,
                                 description="the invariants alone, on what the tables hold now")
    return dg.Definitions(assets=[*assets, *external_assets()], asset_checks=asset_checks(), jobs=[job, checks],
                          sensors=[new_toots_sensor(job)], schedules=[refresh_schedule(job, params)],
                          resources={"notebooks": notebooks_resource, "services": services_resource},
                          executor=dg.in_process_executor)


defs = build()
