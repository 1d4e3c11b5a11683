"""The one fingerprint behind every "reuse when unchanged": a digest of files, library modules, package versions
and a JSON summary of everything else a result depends on.

Three results are reused, each recorded where it lives, and the stores differ for that reason alone:
- a published sample or replay (:mod:`tootpipe.ingest.published`): a JSON file in the state folder, beside the
  broker whose topic holds it (ingest runs before any table exists, and on a topic the database knows nothing of);
- a batch step's tables (:mod:`tootpipe.batch.reuse`): the `step_runs` table, written in the database that holds
  those tables, so that a dropped or changed table is seen and a restored database carries its own record;
- a trained model set (:mod:`tootpipe.sentiment.cache`): `metrics.json` inside the model's own folder, so that a
  model folder copied, kept or deleted takes its record with it.
"""
from __future__ import annotations

import hashlib
import json
from importlib.metadata import version
from pathlib import Path

__all__ = ["file_digest", "fingerprint", "LIBRARY"]

LIBRARY = Path(__file__).resolve().parents[1]  # lib/tootpipe: `modules` are named relative to it


def file_digest(path: Path, h) -> None:
    """Add a file's name and bytes to the hash `h`."""
    h.update(str(path.name).encode())
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)


def fingerprint(summary: dict, *, files: tuple = (), modules: tuple[str, ...] = (),
                packages: tuple[str, ...] = ()) -> str:
    """A 24-hex-digit digest of `files` (their bytes), library `modules` (paths relative to lib/tootpipe, e.g.
    ``"batch/backfill.py"``), the installed versions of `packages` and the JSON `summary`."""
    h = hashlib.sha256()
    for path in (*files, *(LIBRARY / m for m in modules)):
        file_digest(Path(path), h)
    h.update(json.dumps({"summary": summary, "packages": {p: version(p) for p in packages}}, sort_keys=True,
                        default=str).encode())
    return h.hexdigest()[:24]
