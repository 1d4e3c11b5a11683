"""The declared environments agree with each other and with the live demo's files; the install script."""
import os
import subprocess
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = {"PATH": os.environ["PATH"]}  # none of this machine's PIP_* settings


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip) - {"-e ."} == declared


def test_the_live_demo_runs_on_the_embedded_services_in_a_topic_and_database_of_its_own():
    from tootpipe.core import config
    live, default = (config.load(ROOT / "params" / f"{n}.yaml", use_env=False) for n in ("live", "default"))
    assert live.kafka.bootstrap_servers is None and live.database.url is None  # embedded: no Docker needed
    assert live.kafka.topic != default.kafka.topic and live.database.name not in (None, "tootpipe")
    assert live.stream.checkpoint_dir != default.stream.checkpoint_dir and live.orchestration.schedule


def test_compose_live_params_and_env_example_agree():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    live = yaml.safe_load((ROOT / "params" / "live-compose.yaml").read_text())
    env = (ROOT / ".env.example").read_text()
    assert "127.0.0.1:29092:29092" in compose["kafka"]["ports"] and live["kafka"]["bootstrap_servers"] == "localhost:29092"
    assert "127.0.0.1:5433:5432" in compose["postgres"]["ports"] and ":5433/" in live["database"]["url"]
    # nothing is published beyond loopback unless someone opens it on purpose
    assert all(p.startswith("127.0.0.1:") for svc in compose.values() for p in svc.get("ports", []))
    assert "change-me" not in env and "\nDB_PASSWORD=  " in env  # no usable default password
    assert compose["postgres"]["environment"]["POSTGRES_DB"] == live["database"]["url"].rsplit("/", 1)[1]
    # the pipeline's role is made by the init script, no superuser; the image's superuser is another one
    pg = compose["postgres"]
    init = (ROOT / "scripts" / "compose-initdb.sh").read_text()
    assert "./scripts/compose-initdb.sh:/docker-entrypoint-initdb.d/10-tootpipe.sh:ro" in pg["volumes"]
    assert f"CREATE ROLE {live['database']['user']} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE" in init
    assert f"OWNER TO {live['database']['user']}" in init and pg["environment"]["POSTGRES_USER"] != live["database"]["user"]
    assert "DB_PASSWORD" in pg["environment"]["TOOTPIPE_DB_PASSWORD"] and "DB_ADMIN_PASSWORD=" in env
    assert "DB_PASSWORD=" in env and "MASTODON_ACCESS_TOKEN=" in env
    assert "localhost:29092" in env and "localhost:5433/tootpipe" in env


def test_generated_notebooks_and_secrets_are_not_tracked():
    ignored = (ROOT / ".gitignore").read_text().split()
    for pattern in ("notebooks/*.ipynb", ".env", ".tootpipe/", "models/", "reports/"):
        assert pattern in ignored


def test_jvm_versions_match_pyspark_and_compose():
    """Spark's Kafka connector must be built for exactly the pinned pyspark (its internal streaming classes move
    between minor versions), and Docker users run the same Kafka as the embedded broker."""
    import re
    pom = (ROOT / "jvm" / "pom.xml").read_text()
    prop = lambda name: re.search(rf"<{name}>([^<]+)</{name}>", pom).group(1)
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"pyspark=={prop('spark.version')}" in deps
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    assert compose["kafka"]["image"] == f"apache/kafka:{prop('kafka.version')}"
    assert "<repositories>" not in pom and "<repository>" not in pom  # Maven uses the machine's own settings


def test_pipeline_contract_names_every_notebook_and_table_once_and_the_readme_shows_it():
    from tootpipe import pipeline
    from tootpipe.batch import analytics
    from tootpipe.report.runner import notebook_paths
    on_disk = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    assert [s.notebook for s in pipeline.STAGES] == on_disk == [p.stem for p in notebook_paths()]
    tables = pipeline.tables()
    assert len(tables) == len(set(tables)) and set(analytics.TABLES) <= set(tables)
    from tootpipe import steps
    assert all(callable(getattr(steps, f)) for s in pipeline.STAGES for f in s.steps)
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- pipeline:begin -->\n", 1)[1].split("\n<!-- pipeline:end -->", 1)[0]
    assert block == pipeline.markdown(), "README's stage table is stale: paste `python -m tootpipe.pipeline`"
    written = {t for s in pipeline.STAGES for t in s.writes}
    read = {t for s in pipeline.STAGES for t in s.reads if t.isidentifier()}
    assert read <= written, read - written  # a stage reads only what an earlier one writes


def test_library_functions_and_modules_stay_short():
    """No function in lib/ longer than 60 lines, no module longer than 400: each is one readable job."""
    import ast
    long = []
    for p in sorted((ROOT / "lib" / "tootpipe").glob("*.py")):
        src = p.read_text()
        if src.count("\n") > 400:
            long.append(f"{p.name}: {src.count(chr(10))} lines")
        long += [f"{p.name}:{n.name}: {n.end_lineno - n.lineno + 1} lines" for n in ast.walk(ast.parse(src))
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60]
    assert not long, long


def test_the_readme_is_read_in_five_minutes_and_every_page_it_names_exists():
    """≤ 180 lines; what moved out of it is one link away, and every link and image it names is in the tree."""
    import re
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 180
    targets = re.findall(r"\]\(([^)#]+)[^)]*\)", readme) + re.findall(r'<img src="([^"]+)"', readme)
    assert {"docs/architecture.md", "docs/guarantees.md", "docs/performance.md", "docs/performance-log.md",
            "docs/ingest.md", "docs/jvm.md", "docs/testing.md", "docs/orchestration.md", "SECURITY.md"} <= set(targets)
    missing = [t for t in targets if not t.startswith("http") and not (ROOT / t).exists()]
    assert missing == []


def test_the_install_hands_pips_index_find_links_and_certificate_to_uv(tmp_path):
    fake = tmp_path / "python"  # a venv's python whose pip is configured (pip.conf and PIP_* variables)
    fake.write_text("#!/bin/sh\ncat <<'EOF'\nglobal.index-url='https://mirror.example/simple'\n"
                    "global.extra-index-url='https://extra.example/simple'\n:env:.find-links='/opt/a /opt/b'\n"
                    "global.cert='/etc/ssl/corp.pem'\nEOF\n")
    fake.chmod(0o755)
    script = f'source {ROOT / "scripts" / "install.sh"}; py={fake}; with_pip_settings env'
    seen = dict(line.split("=", 1) for line in subprocess.run(["bash", "-c", script], capture_output=True,
                                                               text=True, check=True, env=ENV).stdout.splitlines())
    assert seen["UV_DEFAULT_INDEX"] == "https://mirror.example/simple"
    assert seen["UV_INDEX"] == "https://extra.example/simple"
    assert seen["UV_FIND_LINKS"] == "/opt/a,/opt/b" and seen["SSL_CERT_FILE"] == "/etc/ssl/corp.pem"
    fake.write_text("#!/bin/sh\nexit 1\n")  # nothing configured, or no `pip config`: uv's own defaults
    script = f'set -euo pipefail; source {ROOT / "scripts" / "install.sh"}; py={fake}; with_pip_settings env'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, env=ENV).stdout
    assert "UV_" not in out and "SSL_CERT_FILE" not in out
