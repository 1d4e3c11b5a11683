"""Secure by default: servers that let no one in without a password, secrets that never leave, names that stay in
their folder, and processes stopped only when they are verifiably ours."""
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
from conftest import ROOT, STATE, hermetic, wait_until

from tootpipe.core import config
from tootpipe.core.config import ParamsError, load, redact
from tootpipe.services import embedded as services, procs


def test_redact_hides_passwords_in_urls_queries_and_known_secret_values(monkeypatch):
    monkeypatch.setenv("MASTODON_ACCESS_TOKEN", "tok-3f9a8b7c")
    monkeypatch.setenv("DB_PASSWORD", "s3cr3t-pass")
    text = ("postgresql://tootpipe:hunter2@127.0.0.1:5432/db jdbc:postgresql://h/db?user=u&password=pw42 "
            "token tok-3f9a8b7c in a log line, s3cr3t-pass in an error")
    out = redact(text)
    for leaked in ("hunter2", "pw42", "tok-3f9a8b7c", "s3cr3t-pass"):
        assert leaked not in out
    assert "postgresql://tootpipe:***@127.0.0.1:5432/db" in out
    nested = redact({"database": {"url": "postgresql://u:hunter2@h/d"}, "list": ["x s3cr3t-pass"], "n": 3})
    assert nested == {"database": {"url": "postgresql://u:***@h/d"}, "list": ["x ***"], "n": 3}
    config.register_secret("generated-pw-123")
    assert redact("pw generated-pw-123") == "pw ***"


def test_endpoints_and_params_errors_never_print_a_password(tmp_path):
    endpoints = services.Endpoints("127.0.0.1:9092", "postgresql://tootpipe:hunter2@127.0.0.1:5/db")
    assert "hunter2" not in repr(endpoints) and "hunter2" not in str(endpoints)
    bad = tmp_path / "p.yaml"
    bad.write_text("kafka:\n  partitions: 'postgresql://u:hunter2@h/db'\n")
    with pytest.raises(ParamsError, match=r"kafka\.partitions") as err:
        load(bad, use_env=False)
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize("key,value", [("run.name", "../.."), ("run.name", "a/b"), ("stream.query_name", ".."),
                                       ("stream.query_name", "/etc"), ("run.name", ".hidden")])
def test_names_that_become_folders_stay_in_their_folder(key, value):
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        load(None, {key: value}, use_env=False)


def test_secrets_stay_out_of_the_environment_of_what_the_project_starts(monkeypatch, tmp_path):
    from tootpipe.spark.session import _without_secrets
    monkeypatch.setenv("MASTODON_ACCESS_TOKEN", "tok-3f9a8b7c")
    env = config.child_env()
    assert "MASTODON_ACCESS_TOKEN" not in env and env.get("PATH")
    seen = _without_secrets(lambda: dict(os.environ))  # what the JVM (and its Python workers) would inherit
    assert "MASTODON_ACCESS_TOKEN" not in seen and os.environ["MASTODON_ACCESS_TOKEN"] == "tok-3f9a8b7c"
    # `.env` secrets are read where needed, never copied into os.environ
    monkeypatch.delenv("MASTODON_ACCESS_TOKEN")
    monkeypatch.setenv("TOOTPIPE_HOME", str(tmp_path))
    monkeypatch.delenv("TOOTPIPE_ENV_FILE")  # as in a user's run: the project's own .env
    _unset_after(monkeypatch, "ACTIVE_MIN")  # load() puts .env's overrides into os.environ
    (tmp_path / ".env").write_text("MASTODON_ACCESS_TOKEN=from-dotenv-77\nACTIVE_MIN=7\n")
    assert config.secret("MASTODON_ACCESS_TOKEN") == "from-dotenv-77"
    assert load(None).analytics.active_min == 7
    assert "MASTODON_ACCESS_TOKEN" not in os.environ


def _unset_after(monkeypatch, *names: str) -> None:
    """Absent now and again after the test, whatever the code under test puts into os.environ meanwhile."""
    for name in names:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def test_the_suite_never_reads_the_users_env_file(monkeypatch, tmp_path):
    """A user's `.env` pointing at the live services (the live demo's) must not get the suite's topics and rows: the
    suite names an empty env file (tests/conftest.py), and every process it starts inherits that."""
    monkeypatch.setenv("TOOTPIPE_HOME", str(tmp_path))
    _unset_after(monkeypatch, "KAFKA_BOOTSTRAP", "JDBC_URL")
    (tmp_path / ".env").write_text("KAFKA_BOOTSTRAP=127.0.0.1:9\nJDBC_URL=jdbc:postgresql://127.0.0.1:9/theirs\n"
                                   "DB_PASSWORD=theirs-5e1f\n")
    assert os.environ["TOOTPIPE_ENV_FILE"] == os.devnull
    p = load(None)
    assert p.kafka.bootstrap_servers is None and p.database.url is None and config.secret("DB_PASSWORD") is None
    code = ("from tootpipe.core import config; p = config.load(None); "
            "print(p.kafka.bootstrap_servers, p.database.url, config.secret('DB_PASSWORD'))")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(ROOT / "lib")})
    assert child.stdout.split() == ["None", "None", "None"], child.stderr[-1000:]
    monkeypatch.setenv("TOOTPIPE_ENV_FILE", str(tmp_path / ".env"))  # a file named there is read (and the check bites)
    assert load(None).kafka.bootstrap_servers == "127.0.0.1:9"
    # nor do the user's shell variables: the suite takes them out of its environment when it starts
    shell = {"PATH": "/bin", "KAFKA_BOOTSTRAP": "127.0.0.1:9", "DATABASE_URL": "postgresql://h/theirs",
             "MASTODON_ACCESS_TOKEN": "tok-9c1d", "DB_PASSWORD": "theirs-5e1f", "TOOTPIPE_ENV_FILE": ".env"}
    hermetic(shell)
    assert shell == {"PATH": "/bin", "TOOTPIPE_ENV_FILE": os.devnull}


def test_a_pid_that_is_no_longer_ours_is_never_signalled():
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        mine = procs.identity(sleeper.pid, "sleep")
        wait_until(lambda: procs.is_same(mine), 30, "the child to exec sleep")  # right after fork it is python
        assert not procs.stop({**mine, "started": mine["started"] + 1})  # same pid, another process's start time
        assert not procs.stop({**mine, "marker": "kafka.Kafka"})        # same pid, another program
        assert sleeper.poll() is None                                   # left alone
        assert procs.stop(mine, grace=5) and sleeper.wait(10) is not None
    finally:
        sleeper.kill()


@pytest.mark.integration
def test_embedded_postgresql_lets_no_one_in_without_the_password(services_up):
    from urllib.parse import urlsplit
    u = urlsplit(services_up.database_url)
    for user, password in (("tootpipe", None), ("postgres", None), ("postgres", "wrong"), ("tootpipe", "wrong")):
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(host="127.0.0.1", port=u.port, user=user, password=password, dbname="tootpipe",
                             connect_timeout=5)
    conn = psycopg2.connect(services_up.database_url)
    with conn.cursor() as cur:
        cur.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user")
        assert cur.fetchone() == (False, False, False)
        cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()")
        assert cur.fetchone()[0] == "tootpipe"
    conn.close()
    hba = (STATE / "pg" / "pg_hba.conf").read_text()
    assert "trust" not in [line.split()[-1] for line in hba.splitlines() if line.strip() and line[0] != "#"]
    assert stat.S_IMODE((STATE / "pg-passwords.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(STATE.stat().st_mode) & 0o007 == 0, "others can open the state folder"
    acl = subprocess.run(["getfacl", "-cp", str(STATE)], capture_output=True, text=True).stdout
    if acl:  # with ACLs the group bits are the mask: the entries themselves say who may enter
        entries = {line for line in acl.split() if line and not line.startswith("mask")}
        assert {"group::---", "other::---"} <= entries and all(
            e.endswith("--x") for e in entries if e.startswith("user:") and not e.startswith("user::")), acl
    assert stat.S_IMODE((STATE / "services.json").stat().st_mode) == 0o600
    state = json.loads((STATE / "services.json").read_text())
    assert json.loads(json.dumps(state)) and "password" not in json.dumps(state)  # no password in the state file


@pytest.mark.integration
def test_starting_the_services_again_leaves_the_running_postgresql_its_data(services_up):
    from tootpipe.services import pg_server
    user = pg_server._system_user()
    if user is None:
        pytest.skip("PostgreSQL runs as this user (not root): no ACL is involved")
    services.up(config.load(use_env=False))  # what every command and notebook does while the servers run
    assert pg_server._can_traverse(user, STATE / "pg" / "global")
    acl = subprocess.run(["getfacl", "-p", str(STATE)], capture_output=True, text=True).stdout
    assert "#effective:---" not in acl, acl
    port = services.status()["postgres"]["port"]
    conn = psycopg2.connect(pg_server.url(port, "postgres", pg_server.passwords(STATE)["postgres"], "postgres"))
    conn.autocommit = True
    with conn.cursor() as cur:  # a checkpoint opens global/pg_control: the server carries on
        cur.execute("CHECKPOINT")
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    conn.close()


@pytest.mark.integration
def test_the_servers_started_with_secrets_in_the_environment_do_not_inherit_them(services_up, monkeypatch):
    """Nor a URL with a password (`.env`'s JDBC_URL/DATABASE_URL), nor the shared Spark driver's gateway secret."""
    monkeypatch.setenv("MASTODON_ACCESS_TOKEN", "tok-inherit-5e1d")
    monkeypatch.setenv("DB_PASSWORD", "pw-inherit-9c2b")
    monkeypatch.setenv("JDBC_URL", "jdbc:postgresql://db.example:5432/x?user=u&password=pw-url-71ad")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw-url-3f0e@db.example/x")
    monkeypatch.setenv("PYSPARK_GATEWAY_SECRET", "gw-secret-a9d4")
    monkeypatch.setenv("TOOTPIPE_STATE_DIR", str(STATE / "secrets-test"))  # servers of its own, inside the suite's
    try:
        services.up(load(None, use_env=False))
        for name, svc in services.status().items():
            environ = open(f"/proc/{svc['pid']}/environ", "rb").read()
            for leaked in (b"tok-inherit-5e1d", b"pw-inherit-9c2b", b"pw-url-71ad", b"pw-url-3f0e", b"gw-secret-a9d4"):
                assert leaked not in environ, (name, leaked)
            assert b"TOOTPIPE_STATE_DIR=" in environ  # the rest of the environment is passed on
    finally:
        services.down()
    assert not services.status()


def test_a_servers_environment_keeps_what_holds_no_password(monkeypatch):
    from tootpipe.core.config import server_env
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    monkeypatch.setenv("JDBC_URL", "jdbc:postgresql://127.0.0.1:5432/x?user=u")  # no password: kept
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:@127.0.0.1/x")  # an empty one: kept
    monkeypatch.setenv("OTHER_URL", "https://u:s3cr3t@example.org/")
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "41234")
    env = server_env({"EXTRA": "1"})
    assert env["KAFKA_BOOTSTRAP"] == "127.0.0.1:9092" and env["EXTRA"] == "1" and "JDBC_URL" in env
    assert "DATABASE_URL" in env and "OTHER_URL" not in env and "PYSPARK_GATEWAY_PORT" not in env


def test_the_spark_jvm_and_its_python_workers_start_without_secrets_or_urls_holding_a_password(monkeypatch):
    """The driver JVM (and the Python workers it forks, which inherit its environment) is launched without the
    secrets and without `.env`'s URLs that hold a password; this process keeps them."""
    import os

    from tootpipe.spark.session import _without_secrets
    monkeypatch.setenv("DB_PASSWORD", "pw-5be1d0c2")
    monkeypatch.setenv("JDBC_URL", "jdbc:postgresql://127.0.0.1:5432/x?user=u&password=pw-5be1d0c2")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw-5be1d0c2@127.0.0.1/x")
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    seen = _without_secrets(lambda: dict(os.environ))
    assert not {"DB_PASSWORD", "JDBC_URL", "DATABASE_URL"} & set(seen) and seen["KAFKA_BOOTSTRAP"] == "127.0.0.1:9092"
    assert not any("pw-5be1d0c2" in v for v in seen.values())
    assert os.environ["JDBC_URL"].endswith("password=pw-5be1d0c2") and os.environ["DB_PASSWORD"] == "pw-5be1d0c2"


def test_a_state_folder_a_shell_would_interpret_is_refused_before_anything_runs(tmp_path):
    """pg_ctl runs `sh -c` with the data folder in double quotes: `$(...)` in the path would run a command."""
    from tootpipe.services import pg_server
    from tootpipe.services.embedded import ServiceError
    for name in ("$(touch PWNED)", "`touch PWNED`", 'a"b', "back\\slash"):
        folder = tmp_path / name
        folder.mkdir()
        with pytest.raises(ServiceError, match="would hand to a shell"):
            pg_server.start(folder)
        assert not (folder / "pg").exists() and not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()


def test_files_runs_depend_on_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """The password file, the state file, a checkpoint's stamp: a crash mid-write leaves the old file (or none),
    never a truncated one that locks the user out; the passwords are made once even by two processes at once."""
    from tootpipe.core import paths
    from tootpipe.services import pg_server
    target = tmp_path / "state.json"
    paths.write_atomic(target, '{"v": 1}')
    assert stat.S_IMODE(target.stat().st_mode) == 0o600

    def crash(_fd):
        raise OSError("disk gone (test)")
    with monkeypatch.context() as m:
        m.setattr(paths.os, "fsync", crash)
        with pytest.raises(OSError, match="disk gone"):
            paths.write_atomic(target, '{"v": 2, "and much more": "x"}')
    assert json.loads(target.read_text()) == {"v": 1} and [p.name for p in tmp_path.iterdir()] == ["state.json"]
    with pytest.raises(FileExistsError):
        paths.write_atomic(target, "{}", exclusive=True)
    first = pg_server.passwords(tmp_path)
    assert pg_server.passwords(tmp_path) == first and stat.S_IMODE((tmp_path / "pg-passwords.json").stat().st_mode) == 0o600


def test_the_report_index_escapes_and_redacts_what_stands_for_the_row_counts(tmp_path):
    """When the database is gone the index shows the error instead of the counts: a hostile server's text is shown
    as text, and a URL's password never reaches the page."""
    from tootpipe.report.html import index_page
    error = "<script>alert(1)</script> cannot reach postgresql://tootpipe:s3cr3t-pw@db.example:5432/x"
    page = index_page(tmp_path, "run-1", config.load(None, use_env=False), [], {"(database unavailable)": error},
                      "ok").read_text()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "s3cr3t-pw" not in page and "db.example:5432" in page


def test_processes_starting_postgresql_at_once_on_a_fresh_machine_get_its_one_system_user():
    """`make test`'s two workers start PostgreSQL at the same moment: on a machine where its system user does not
    exist yet, both create it; the one that loses the race gets the user the other created, not an error."""
    import threading
    import uuid

    from tootpipe.services import pg_server
    if os.geteuid() != 0:
        pytest.skip("only root creates the system user")
    name, start, results = f"tpt{uuid.uuid4().hex[:8]}", threading.Barrier(8), []

    def create():
        start.wait()
        try:
            results.append(pg_server._system_user(name).pw_uid)
        except Exception as exc:  # noqa: BLE001 - what the losing process would have raised
            results.append(exc)
    threads = [threading.Thread(target=create) for _ in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        subprocess.run(["userdel", name], capture_output=True)
    assert len(results) == 8 and len(set(results)) == 1 and isinstance(results[0], int), results
