"""Batch steps reused on a rerun: `clean` and the analytics are not computed again when nothing they read changed.

Guarantees: a step's fingerprint covers its parameters, its code (the modules it names, and pyspark's version) and
a summary of what it reads (for `clean`: the row count and newest load time of `toots_raw`; for the analytics: the
recorded run of `clean` and the row count of `toots_clean`). It is recorded in `step_runs` only after the step's
outputs are written, with their row counts. A rerun with the same fingerprint whose output tables still hold those
counts gets the recorded result with `"reused": true`; any difference (new toots, other filters, edited code, an
output table changed or dropped, a run that died before recording) runs the step again.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from .db import query_df, table_counts, transaction
from .model_cache import file_digest

__all__ = ["STEP_RUNS_SQL", "fingerprint", "reusable", "record", "run_once"]

STEP_RUNS_SQL = """CREATE TABLE IF NOT EXISTS step_runs (step text PRIMARY KEY, fingerprint text NOT NULL,
    result jsonb NOT NULL, finished_at timestamptz NOT NULL DEFAULT now())"""


def _ensure(url: str) -> None:
    with transaction(url) as conn, conn.cursor() as cur:
        cur.execute(STEP_RUNS_SQL)


def fingerprint(url: str, parameters: dict, modules: tuple[str, ...], inputs_sql: str) -> str:
    """A digest of the parameters, the named library modules and the one row `inputs_sql` returns."""
    from importlib.metadata import version
    _ensure(url)
    h = hashlib.sha256()
    code = Path(__file__).parent
    for module in modules:
        file_digest(code / module, h)
    summary = query_df(url, inputs_sql).astype(str).to_dict("records")
    h.update(json.dumps({"parameters": parameters, "inputs": summary, "pyspark": version("pyspark")},
                        sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


def reusable(url: str, step: str, key: str) -> dict | None:
    """The recorded result of `step` if it ran to the end under `key` (from :func:`fingerprint`, which creates the
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
