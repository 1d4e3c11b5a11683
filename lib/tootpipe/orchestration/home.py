"""`tootpipe orchestrate`: the embedded services, then Dagster's webserver and daemon on 127.0.0.1 (the open-source
UI has no login: never on another address), the instance's home in the state folder.

Guarantees: the home (`<state>/dagster/`, 0700) keeps every run, its logs and the sensor's cursor in SQLite across
restarts; telemetry is off; one run at a time (a queued run coordinator with one slot); the parameters come from
`--params`, handed to the code location as `$TOOTPIPE_PARAMS`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from tootpipe.core.config import child_env
from tootpipe.core.paths import state_dir

__all__ = ["dagster_home", "command"]

DAGSTER_YAML = """# written by tootpipe orchestrate
telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 1
    dequeue_interval_seconds: 1
run_monitoring:
  enabled: true
  start_timeout_seconds: 300
"""


def dagster_home() -> Path:
    """`<state>/dagster` (0700) with its dagster.yaml."""
    home = state_dir() / "dagster"
    home.mkdir(mode=0o700, exist_ok=True)
    os.chmod(home, 0o700)
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    return home


def command(params_file: str, port: int, host: str = "127.0.0.1") -> tuple[list[str], dict]:
    """The `dagster dev` command line and its environment."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the Dagster UI has no authentication: it listens on loopback only, not {host}")
    env = child_env({"DAGSTER_HOME": str(dagster_home()), "TOOTPIPE_PARAMS": params_file})
    dagster = Path(sys.executable).with_name("dagster")
    return [str(dagster), "dev", "-m", "tootpipe.orchestration.definitions", "-h", host, "-p", str(port)], env
