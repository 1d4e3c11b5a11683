"""Batch steps reused on a rerun: `clean` and the analytics are not computed again when nothing they read changed.

Guarantees: a step's fingerprint covers its parameters, its code (the modules it names, and pyspark's version) and
a summary of what it reads (for `clean`: the row count and newest load time of `toots_raw`; for the analytics: the
recorded run of `clean` and the row count of `toots_clean`). It is recorded in `step_runs` only after the step's
outputs are written, with their row counts. A rerun with the same fingerprint whose output tables still hold those
counts gets the recorded result with `"reused": true`; any difference (new toots, other filters, edited code, an
output table changed or dropped, a run that died before recording) runs the step again.
"""
from __future__ import annotations

import json
from typing import Callable

from tootpipe.core.fingerprint import fingerprint
from tootpipe.postgres.db import query_df, table_counts, transaction
from tootpipe.postgres.schema import STEP_RUNS_SQL

__all__ = ["step_key", "reusable", "record", "run_once"]



def _ensure(url: str) -> None:
    with transaction(url) as conn, conn.cursor() as cur:
        cur.execute(STEP_RUNS_SQL)


def step_key(url: str, parameters: dict, modules: tuple[str, ...], inputs_sql: str) -> str:
    """The step's :func:`~tootpipe.core.fingerprint.fingerprint`: its parameters, the named library modules
    (relative to lib/tootpipe), pyspark's version and the one row `inputs_sql` returns."""
    _ensure(url)
    summary = query_df(url, inputs_sql).astype(str).to_dict("records")
    return fingerprint({"parameters": parameters, "inputs": summary}, modules=modules, packages=("pyspark",))


def reusable(url: str, step: str, key: str) -> dict | None:
    """The recorded result of `step` if it ran to the end under `key` (from :func:`step_key`, which creates the
    table) and its output tables (the `outputs` of its result) still hold the rows it wrote; else None."""
    rows = query_df(url, "SELECT fingerprint, result FROM step_runs WHERE step = %s", (step,))
    if rows.empty or rows.fingerprint[0] != key:
        return None
    result = rows.result[0] if isinstance(rows.result[0], dict) else json.loads(rows.result[0])
    outputs = result.get("outputs", {})
    if not outputs or table_counts(url, list(outputs)) != outputs:
        return None
    return {**result, "reused": True}


def record(url: str, step: str, key: str, result: dict) -> None:
    """Record that `step` ran to the end under `key` (its `result` names its `outputs`: table -> rows written)."""
    with transaction(url) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO step_runs (step, fingerprint, result) VALUES (%s, %s, %s) ON CONFLICT (step) DO "
                    "UPDATE SET fingerprint = EXCLUDED.fingerprint, result = EXCLUDED.result, finished_at = now()",
                    (step, key, json.dumps(result)))


def run_once(url: str, step: str, key: str, compute: Callable[[], dict], force: bool = False) -> dict:
    """The recorded result of `step` under `key` if it is reusable (and not `force`), else `compute()`'s, recorded
    once it has returned (a step that fails records nothing)."""
    if not force and (done := reusable(url, step, key)):
        return done
    result = compute()
    record(url, step, key, result)
    return result
