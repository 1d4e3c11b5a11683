"""Dagster: the definitions load, the asset graph is the stage contract, the sensor requests a run only for new data,
the home keeps the UI on loopback with telemetry off."""
import dataclasses

import pytest
from conftest import Holder, publish


def test_the_definitions_load_and_the_asset_graph_is_the_stage_contract():
    import dagster as dg

    from tootpipe.orchestration.assets import asset_key, owners
    from tootpipe.orchestration.definitions import defs
    from tootpipe.pipeline import STAGES
    graph = defs.resolve_asset_graph()
    made = owners()
    for stage in STAGES:
        for table in stage.writes:
            key = dg.AssetKey(asset_key(table))
            assert key in graph.get_all_asset_keys(), f"{table} of {stage.notebook} is not an asset"
            if made[asset_key(table)] == stage.notebook:
                node = graph.get(key)
                assert node.group_name == stage.notebook.split("_", 1)[1]
                own = {k for k, nb in made.items() if nb == stage.notebook}
                assert {d.to_user_string() for d in node.parent_keys} == {asset_key(r) for r in stage.reads} - own
    assert dg.AssetKey("report") in graph.get_all_asset_keys()
    job = defs.resolve_job_def("pipeline")
    assert job.executor_def.name == "in_process"
    checks = {k.name for k in graph.asset_check_keys}
    assert {"windows_equal_a_recount", "no_duplicate_uris", "stream_batch_reconciliation"} <= checks
    dg.Definitions.validate_loadable(defs)


def test_a_stage_whose_writes_change_changes_the_graph():
    """The graph is derived from the contract, not written beside it."""
    from tootpipe.orchestration.assets import owners, stage_assets
    from tootpipe.pipeline import STAGES
    changed = (*STAGES[:3], dataclasses.replace(STAGES[3], writes=(*STAGES[3].writes, "toots_per_weekday")),
               *STAGES[4:])
    keys = {k.to_user_string() for a in stage_assets(changed) for k in a.keys}
    assert "toots_per_weekday" in keys and owners(changed)["toots_per_weekday"] == "04_analytics"
    assert "toots_per_weekday" not in {k.to_user_string() for a in stage_assets() for k in a.keys}


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_the_sensor_requests_a_run_only_for_new_data(fresh, spark, monkeypatch):
    import dagster as dg

    from tootpipe import steps
    from tootpipe.orchestration import sensors
    params, endpoints = fresh
    monkeypatch.setattr(sensors, "load", lambda _path: params)  # the test's own topic and database
    monkeypatch.setattr(sensors, "endpoints", lambda _params: endpoints)
    sensor = sensors.new_toots_sensor(dg.AssetSelection.all())
    skip = sensor(dg.build_sensor_context())
    assert isinstance(skip, dg.SkipReason) and "nothing to read" in skip.skip_message
    publish(params, endpoints, n=40, seed=5)
    first = sensor(dg.build_sensor_context())
    assert isinstance(first, dg.RunRequest) and "not streamed yet" in first.tags["tootpipe/reason"]
    again = sensor(dg.build_sensor_context())
    assert again.run_key == first.run_key  # the same data: the same key, which Dagster never runs twice
    steps.stream_step(params, endpoints)
    half = sensor(dg.build_sensor_context())
    assert isinstance(half, dg.RunRequest) and "not backfilled" in half.tags["tootpipe/reason"]
    steps.backfill_step(params, endpoints)
    writer = Holder(endpoints.database_url, "batch")  # a batch writer runs (make run, the CLI): no run now
    try:
        busy = sensor(dg.build_sensor_context())
        assert isinstance(busy, dg.SkipReason) and "a batch writer is running" in busy.skip_message
        assert f"pid {writer.proc.pid}" in busy.skip_message
    finally:
        writer.release()
    done = sensor(dg.build_sensor_context())
    assert isinstance(done, dg.SkipReason) and "nothing new" in done.skip_message, getattr(done, "tags", done)
    publish(params, endpoints, n=40, seed=6)
    more = sensor(dg.build_sensor_context())
    assert isinstance(more, dg.RunRequest) and more.run_key != first.run_key


def test_the_sensor_skips_when_the_services_are_down(monkeypatch):
    from tootpipe.core import config
    from tootpipe.orchestration import sensors
    params = config.load(None, {"kafka.bootstrap_servers": "127.0.0.1:9"}, use_env=False)
    ends, why = sensors.new_data(params)
    assert ends is None and "not reachable" in why


def test_the_home_keeps_the_ui_on_loopback_with_telemetry_off_and_one_run_at_a_time():
    import yaml

    from tootpipe.orchestration.home import command
    cmd, env = command("params/small.yaml", 3999)
    assert cmd[1:] == ["dev", "-m", "tootpipe.orchestration.definitions", "-h", "127.0.0.1", "-p", "3999"]
    home = env["DAGSTER_HOME"]
    conf = yaml.safe_load(open(f"{home}/dagster.yaml"))
    assert conf["telemetry"]["enabled"] is False and conf["run_coordinator"]["config"]["max_concurrent_runs"] == 1
    assert conf["run_coordinator"]["config"]["dequeue_interval_seconds"] == 1  # a launched run starts within 1 s
    assert env["TOOTPIPE_PARAMS"] == "params/small.yaml"
    with pytest.raises(ValueError, match="loopback"):
        command("params/small.yaml", 3999, host="0.0.0.0")


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_orchestrate_serves_the_ui_on_loopback_with_the_asset_graph(fresh, tmp_path):
    """`tootpipe orchestrate` on the suite's services: the GraphQL API lists every table of the contract as an asset
    and headless Chromium shows the asset list (screenshot); a run launched through the daemon is still in the
    history after kill -9 of the webserver and the daemon and a new start. Its parameters name the test's own empty
    topic and database and the suite's folders, so the sensor finds nothing to run and nothing of yours is written."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    import yaml
    from browser import Browser, chromium_path
    from conftest import ROOT, STATE, wait_until

    from tootpipe.orchestration.assets import asset_key
    from tootpipe.pipeline import STAGES
    from tootpipe.services.procs import free_port
    params, endpoints = fresh
    own = tmp_path / "params.yaml"
    own.write_text(yaml.safe_dump({**yaml.safe_load((ROOT / "params/small.yaml").read_text()),
                                   "kafka": {"topic": params.kafka.topic, "dlq_topic": params.kafka.dlq_topic},
                                   "database": {"name": endpoints.database_url.rsplit("/", 1)[1].split("?")[0]},
                                   "stream": {"checkpoint_dir": str(STATE / "checkpoints"), "query_name": "ui"},
                                   "sentiment": {"model_dir": str(STATE / "models")},
                                   "reports": {"dir": str(tmp_path / "reports")}}))
    port = free_port()
    log = tmp_path / "dagster.log"

    def start(sigint=signal.SIG_DFL):
        with open(log, "a") as out:
            return subprocess.Popen([sys.executable, "-m", "tootpipe.cli", "--params", str(own),
                                     "orchestrate", "--port", str(port)], cwd=ROOT, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))
    proc = start()

    def graphql(query):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())["data"]

    def nodes():
        try:
            return graphql("{ assetNodes { assetKey { path } groupName } }")["assetNodes"]
        except OSError:
            assert proc.poll() is None, log.read_text()[-3000:]
            return None
    try:
        found = wait_until(nodes, 240, "Dagster's GraphQL to list the assets")
        keys = {"/".join(n["assetKey"]["path"]) for n in found}
        assert {asset_key(t) for s in STAGES for t in s.writes} <= keys
        assert graphql("{ version }")["version"] == "1.13.28"
        run_id = launch(graphql, "checks")  # a run through the daemon (the invariants alone: seconds)
        # (it fails when the suite's own database holds no pipeline tables yet: either way it is a finished run)
        status = wait_until(lambda: _finished(graphql, run_id), 240, "the checks run to finish")
        os.killpg(proc.pid, signal.SIGKILL)  # webserver and daemon die at once, with no chance to clean up
        proc.wait(60)
        proc = start(signal.SIG_IGN)  # as from a script (`make orchestrate &`): SIGINT ignored
        runs = wait_until(lambda: _runs(graphql, proc, log), 240, "Dagster again after kill -9")
        assert runs == {run_id: status}, runs  # the history survived (no stale lock); the sensor started nothing
        binary = chromium_path()
        assert binary, "chromium is missing: scripts/system-deps.sh installs it"
        with Browser(binary) as browser:
            r = browser.load(f"http://127.0.0.1:{port}/assets", ROOT / "test-artifacts" / "screenshots" /
                             "dagster_assets.png", timeout=120,
                             steps=(("", "document.body.innerText.includes('mastodon_posts')"),))
        assert r.screenshot.stat().st_size > 10_000
        os.killpg(proc.pid, signal.SIGTERM)  # what `kill` sends: it stops even with SIGINT ignored
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            pytest.fail("tootpipe orchestrate ignored SIGTERM (started with SIGINT ignored)")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def launch(graphql, job: str) -> str:
    """Launch `job` through the webserver (queued, then started by the daemon); its run id."""
    repos = graphql("{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }")
    repo = repos["repositoriesOrError"]["nodes"][0]
    out = graphql('mutation { launchRun(executionParams: {selector: {repositoryLocationName: "%s", repositoryName: '
                  '"%s", jobName: "%s"}}) { __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError '
                  '{ message } } }' % (repo["location"]["name"], repo["name"], job))["launchRun"]
    assert out["__typename"] == "LaunchRunSuccess", out
    return out["run"]["runId"]


def _finished(graphql, run_id: str) -> str | None:
    status = graphql('{ runOrError(runId: "%s") { ... on Run { status } } }' % run_id)["runOrError"]["status"]
    return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None


def _runs(graphql, proc, log) -> dict | None:
    try:
        found = graphql("{ runsOrError { ... on Runs { results { runId status } } } }")["runsOrError"]["results"]
    except OSError:
        assert proc.poll() is None, log.read_text()[-3000:]
        return None
    return {r["runId"]: r["status"] for r in found}
