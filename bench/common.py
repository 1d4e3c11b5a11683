"""Shared by the bench scripts: where the machine facts come from and how a result is written."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path


def stamp(result: dict) -> dict:
    """The result with the machine and the time of the measurement."""
    return {**result, "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write(out: str | Path, result: dict) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    from tootpipe.core.config import redact
    Path(out).write_text(json.dumps(redact(stamp(result)), indent=2) + "\n")  # no password reaches a result file
    print(f"wrote {out}")
