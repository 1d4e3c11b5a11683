"""The stage contract as Dagster assets: every table a stage writes is an asset of that stage's group (a table
several stages write, such as `step_runs`, belongs to the first), the Kafka topic is the asset of stage 01, the
rendered report that of stage 06; each asset depends on what its stage reads. Materializing a stage executes its
notebook (:class:`tootpipe.report.runner.NotebookRun`), then records rows, seconds and the notebook's report for each
of its assets; the invariants of :data:`CHECKS` are blocking asset checks of the assets they check."""
from __future__ import annotations

import re
import time

import dagster as dg

from tootpipe.core.paths import project_root
from tootpipe.pipeline import STAGES, TOPIC, Stage
from tootpipe.postgres.db import query_df, table_counts
from tootpipe.report import checks

__all__ = ["asset_key", "stage_assets", "external_assets", "owners", "asset_checks", "CHECKS"]

LABELS = {TOPIC: "kafka_topic", "dead-letter topic (kafka.dlq_topic)": "dlq_topic",
          "the Mastodon API, or the bundled sample": "mastodon_source"}
REPORT = "report"  # what stage 06 produces: reports/<run>/index.html
STEP_OF = {"03_batch": "clean", "04_analytics": "analytics"}  # the step_runs row that says "reused"


def asset_key(name: str) -> str:
    """A table keeps its name; the topic, the dead-letter topic and the source get short names."""
    return LABELS.get(name) or re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_")


def owners(stages=STAGES) -> dict[str, str]:
    """asset key -> the notebook of the stage that produces it (the first stage writing it)."""
    out: dict[str, str] = {}
    for s in stages:
        for w in s.writes or (REPORT,):
            out.setdefault(asset_key(w), s.notebook)
    return out


def external_assets(stages=STAGES) -> list[dg.AssetSpec]:
    """What stages read that no stage writes: the source, the dead-letter topic."""
    made = owners(stages)
    keys = sorted({asset_key(r) for s in stages for r in s.reads} - set(made))
    return [dg.AssetSpec(k, group_name="sources", description="read by the pipeline, written outside it") for k in keys]


def _stream_check(context, params, endpoints) -> dict:
    from tootpipe.stream.query import checkpoint_path  # lazy: pyspark
    return checks.stream_invariants(endpoints.database_url, endpoints.bootstrap_servers, params.kafka.topic,
                                    str(checkpoint_path(params, endpoints)))


CHECKS = {  # stage -> (check name, asset key, what it checks, function)
    "02_stream": [("windows_equal_a_recount", "streamed_toot_counts",
                   "every minute and per-user window equals a recount of the stored toots; each uri once",
                   _stream_check)],
    "03_batch": [("no_duplicate_uris", "toots_clean", "toots_clean holds each uri once",
                  lambda c, p, e: checks.clean_unique(e.database_url))],
    "04_analytics": [("stream_batch_reconciliation", "stream_batch_reconciliation",
                      "the stream's hourly counts against the batch's (informational: late rows differ)",
                      lambda c, p, e: checks.reconciliation_summary(e.database_url))],
}


def stage_assets(stages=STAGES) -> list[dg.AssetsDefinition]:
    made = owners(stages)
    return [_stage_asset(s, [k for k, nb in made.items() if nb == s.notebook]) for s in stages]


def _stage_asset(stage: Stage, keys: list[str]) -> dg.AssetsDefinition:
    group = stage.notebook.split("_", 1)[1]
    deps = sorted({asset_key(r) for r in stage.reads} - set(keys))
    specs = [dg.AssetSpec(k, deps=deps, group_name=group, description=stage.title, kinds={"postgres"}
                          if k not in ("kafka_topic", REPORT) else None) for k in keys]

    @dg.multi_asset(name=f"stage_{stage.notebook}", specs=specs, required_resource_keys={"notebooks"},
                    description=f"notebooks/{stage.notebook}.py: {stage.title}")
    def run_stage(context):
        run = context.resources.notebooks
        t0 = time.time()
        failure = run.execute(project_root() / "notebooks" / f"{stage.notebook}.py")
        report = run.out_dir / f"{stage.notebook}.html"
        if failure:
            raise dg.Failure(description=str(failure), metadata={"notebook": str(report), "cell": failure.cell,
                                                                  "error": failure.error})
        rows = table_counts(run.endpoints.database_url, [k for k in keys if k not in ("kafka_topic", REPORT)])
        reused = _reused(run.endpoints.database_url, stage.notebook, t0)
        for k in keys:
            meta = {"seconds": round(time.time() - t0, 1), "notebook": dg.MetadataValue.path(str(report))}
            if k in rows and rows[k] is not None:
                meta["rows"] = rows[k]
            if reused is not None:
                meta["reused"] = reused
            yield dg.MaterializeResult(asset_key=k, metadata=meta)
    return run_stage


def asset_checks() -> list[dg.AssetChecksDefinition]:
    """The invariants as blocking checks of the assets they check: they run after their stage (what depends on a
    failed one does not run) and alone, from the UI or the `checks` job, on the `services` resource."""
    return [_check(name, key, what, fn) for items in CHECKS.values() for name, key, what, fn in items]


def _check(name: str, key: str, what: str, fn) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=key, name=name, description=what, blocking=True, required_resource_keys={"services"})
    def check(context):
        params, endpoints = context.resources.services
        result = fn(context, params, endpoints)
        figures = {k: v for k, v in result.items() if isinstance(v, (int, float, str)) and k != "failures"}
        return dg.AssetCheckResult(passed=not result["failures"],
                                   metadata={**figures, "failures": "; ".join(result["failures"]) or "none"})
    return check


def _reused(url: str, notebook: str, started: float) -> bool | None:
    """Whether the stage's reusable step was reused in this run (its step_runs row is older than the run)."""
    step = STEP_OF.get(notebook)
    if step is None:
        return None
    rows = query_df(url, "SELECT extract(epoch FROM finished_at) AS t FROM step_runs WHERE step = %s", (step,))
    return bool(len(rows)) and float(rows.t[0]) < started
