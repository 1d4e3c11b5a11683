"""Embedded services: Apache Kafka (a KRaft node, :mod:`tootpipe.services.kafka_broker`) and PostgreSQL
(:mod:`tootpipe.services.pg_server`), started by the project.

Used only when the parameters (or the environment) give no ``kafka.bootstrap_servers`` / database URL; then
nothing is started and the given servers are used. What runs is recorded in ``services.json`` in the state folder
(``.tootpipe/``, or ``$TOOTPIPE_STATE_DIR``), which the CLI, run_all.py and the notebooks read.

Guarantees: both servers listen on loopback only and let no one in without a password they do not have (Kafka's
PLAINTEXT listener is on 127.0.0.1 only; PostgreSQL asks every connection for a scram-sha-256 password); the state
folder is 0700 and its secrets 0600; the servers get an environment without the project's secrets; :func:`down`
stops only processes that are verifiably the ones it started, and leaves none of them behind.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from tootpipe.core.config import Params, redact, secret, server_env
from tootpipe.core.errors import ServiceError
from tootpipe.core.paths import state_dir, write_atomic
from tootpipe.kafka import cluster_id
from tootpipe.services import kafka_broker, pg_server
from tootpipe.services.procs import is_same, stop

__all__ = ["Endpoints", "endpoints", "up", "down", "status", "state_dir", "state_path", "ServiceError",
           "cluster_of", "describe", "create_database", "drop_database", "checkpoint", "stop_postgres"]


MARKERS = {"kafka": "kafka.Kafka", "postgres": "postgres"}  # a word of each server's command line


@dataclass
class Endpoints:
    bootstrap_servers: str
    database_url: str
    cluster_id: str | None = None
    embedded_kafka: bool = False
    embedded_postgres: bool = False

    def __repr__(self) -> str:  # never print the database password
        return redact(f"Endpoints({asdict(self)})")


def state_path() -> Path:
    return state_dir() / "services.json"


def _read_state() -> dict:
    try:
        return json.loads(state_path().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_state(state: dict) -> None:
    write_atomic(state_path(), json.dumps(state, indent=2))


def _secure(folder: Path) -> None:
    """The state folder is the owner's alone (toot text, checkpoints, logs and passwords live there); the
    PostgreSQL system user gets a traverse-only ACL entry where it needs one. With an ACL the group bits of the mode
    are the ACL's mask: a plain chmod 0700 would empty it and cut a running PostgreSQL off from its data (it stopped
    at its next checkpoint: "could not open file global/pg_control: Permission denied"), so the mask's traverse
    bit is kept."""
    keep = 0
    try:
        if "system.posix_acl_access" in os.listxattr(folder):
            keep = folder.stat().st_mode & 0o010
    except OSError:  # no extended attributes here: no ACL either
        pass
    os.chmod(folder, 0o700 | keep)


def stop_postgres(mode: str = "fast") -> None:
    """Stop the embedded PostgreSQL; "immediate" aborts without a clean shutdown (what a crash looks like)."""
    pg = _read_state().get("postgres")
    if pg:
        pg_server.stop(pg, mode)


def _wants_embedded(params: Params) -> tuple[bool, bool]:
    return params.kafka.bootstrap_servers is None, params.database.url is None


def up(params: Params) -> Endpoints:
    """Start whatever embedded service the parameters need and is not running yet; return the endpoints."""
    want_kafka, want_pg = _wants_embedded(params)
    folder = state_dir()
    _secure(folder)
    state = _read_state()
    if want_kafka and not is_same(state.get("kafka", {}), MARKERS["kafka"]):
        state["kafka"] = kafka_broker.start(folder, server_env())
    if want_pg and not is_same(state.get("postgres", {}), MARKERS["postgres"]):
        state["postgres"] = pg_server.start(folder, state.get("postgres", {}).get("port"))
    _write_state(state)
    if want_pg and params.database.name:  # the parameters' own database on the embedded server
        pg_server.create_database(state["postgres"]["port"], pg_server.passwords(folder), params.database.name)
    return endpoints(params)


def down() -> dict:
    """Stop the embedded services recorded in the state file (a controlled shutdown of the broker; a fast stop of
    PostgreSQL); returns what was stopped."""
    state = _read_state()
    stopped = {}
    if "kafka" in state:
        stop(state["kafka"], grace=60, marker=MARKERS["kafka"])  # SIGTERM: the broker closes its logs cleanly
        stopped["kafka"] = state["kafka"].get("pid")
    if "postgres" in state:
        pg_server.stop(state["postgres"])
        stopped["postgres"] = state["postgres"].get("pid")
    if state_path().exists():
        state_path().unlink()
    return stopped


def status() -> dict:
    """What the state file records, with whether each process is alive (and still the one that was started)."""
    state = _read_state()
    for name, svc in state.items():
        svc["alive"] = is_same(svc, MARKERS.get(name))
    return state


def _with_password(url: str, user: str | None) -> str:
    """Turn a JDBC or libpq URL into a libpq URL, adding DB_USER and DB_PASSWORD from the environment."""
    if url.startswith("jdbc:"):
        url = url[len("jdbc:"):]
    parts = urlsplit(url)
    if parts.scheme.startswith("postgresql+"):
        parts = parts._replace(scheme="postgresql")
    password = secret("DB_PASSWORD")
    if (user or password) and "@" not in parts.netloc:
        cred = quote(user or "postgres") + (":" + quote(password) if password else "")
        parts = parts._replace(netloc=f"{cred}@{parts.netloc}")
    return urlunsplit(parts)


def _embedded_url(pg: dict, database: str | None = None) -> str:
    pw = pg_server.passwords(state_dir())
    return pg_server.url(pg["port"], pg["role"], pw[pg["role"]], database or pg["database"])


def endpoints(params: Params) -> Endpoints:
    """Where Kafka and PostgreSQL are: from the parameters/environment, else the running embedded services."""
    want_kafka, want_pg = _wants_embedded(params)
    state = status()
    if want_kafka:
        k = state.get("kafka")
        if not k or not k["alive"]:
            raise ServiceError("no Kafka broker: give kafka.bootstrap_servers (or $KAFKA_BOOTSTRAP), "
                               "or start the embedded one with `tootpipe services up`")
    if want_pg:
        p = state.get("postgres")
        if not p or not p["alive"]:
            raise ServiceError("no PostgreSQL: give database.url (or $JDBC_URL), "
                               "or start the embedded one with `tootpipe services up`")
        if "role" not in p:
            raise ServiceError("the embedded PostgreSQL was started by an older tootpipe: "
                               "`tootpipe services down`, then `up` again")
    return Endpoints(
        bootstrap_servers=state["kafka"]["bootstrap_servers"] if want_kafka else params.kafka.bootstrap_servers,
        database_url=_embedded_url(state["postgres"], params.database.name) if want_pg else _with_password(params.database.url,
                                                                                     params.database.user),
        cluster_id=state["kafka"]["cluster_id"] if want_kafka else None,
        embedded_kafka=want_kafka, embedded_postgres=want_pg,
    )


def _embedded_pg(endpoints: Endpoints, what: str) -> tuple[int, dict[str, str]]:
    """The embedded PostgreSQL's port and passwords, for `what` (an error naming it when the server is not ours)."""
    if not endpoints.embedded_postgres:
        raise ServiceError(f"{what} needs the embedded PostgreSQL")
    return _read_state()["postgres"]["port"], pg_server.passwords(state_dir())


def create_database(endpoints: Endpoints, name: str) -> Endpoints:
    """The endpoints with a database of their own (created on the embedded server, owned by the pipeline's
    role); tests and benchmarks use it so they never write into the project's database."""
    url = pg_server.create_database(*_embedded_pg(endpoints, "create_database"), name)
    return replace(endpoints, database_url=url)


def drop_database(endpoints: Endpoints, name: str) -> None:
    """Drop a database made by :func:`create_database` (benchmarks leave none behind)."""
    port, pw = _embedded_pg(endpoints, "drop_database")
    if name == "tootpipe":
        raise ServiceError("the project's own database is never dropped")
    pg_server.drop_database(port, pw, name)


def checkpoint(endpoints: Endpoints) -> None:
    """A checkpoint of the embedded PostgreSQL, now (a benchmark starts timing after one, so that a checkpoint its
    preparation set off does not fall inside what it times)."""
    pg_server.checkpoint(*_embedded_pg(endpoints, "checkpoint"))


def cluster_of(endpoints: Endpoints) -> str:
    """The Kafka cluster id of the endpoints: the embedded broker's, else asked from the given cluster."""
    if endpoints.cluster_id:
        return endpoints.cluster_id
    return cluster_id(endpoints.bootstrap_servers)


def describe(endpoints: Endpoints) -> dict:
    """Endpoints without credentials, for reports."""
    d = asdict(endpoints)
    u = urlsplit(endpoints.database_url)
    d["database_url"] = f"{u.scheme}://{u.hostname}:{u.port}{u.path}"
    return d
