"""The `tootpipe` command: services, sample, ingest, export, normalize, stream, batch, sentiment, psql, lab.

Errors the user can act on (bad parameters, unreachable services) print one clear line and exit 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tootpipe import steps
from tootpipe.core.config import ParamsError, child_env, load, project_root
from tootpipe.core.errors import WriterBusy
from tootpipe.ingest.live import SourceError
from tootpipe.ingest.normalize import BadPayload, normalize_event
from tootpipe.ingest.sample import generate, write_jsonl
from tootpipe.ingest.source import events_from_file
from tootpipe.kafka import KafkaUnavailable, end_offsets, export
from tootpipe.orchestration.home import command
from tootpipe.postgres.db import DatabaseUnavailable
from tootpipe.services import embedded as services
from tootpipe.services.embedded import ServiceError
from tootpipe.services.pg_server import binary as pg_binary
from tootpipe.spark.session import JavaMissing, get_spark
from tootpipe.steps import context, ingest_step

__all__ = ["main"]


def _params(args):
    return load(args.params)


def _ctx(args):
    return context(args.params)


def cmd_services(args) -> int:
    if args.action == "up":
        endpoints = services.up(_params(args))
        print(json.dumps(services.describe(endpoints), indent=2))
    elif args.action == "down":
        print(json.dumps({"stopped": services.down()}))
    else:
        print(json.dumps(services.status(), indent=2))
    return 0


def cmd_sample(args) -> int:
    events = generate(args.n, args.seed)
    if args.out:
        write_jsonl(events, args.out)
    else:
        write_jsonl(events, fh=sys.stdout)
    return 0


def cmd_ingest(args) -> int:
    params, endpoints = _ctx(args)
    if args.source:
        params.source.kind = args.source
    if args.replay:
        params.source.kind, params.source.replay_path = "replay", args.replay
    if args.rate:
        params.source.rate = args.rate
    print(json.dumps(ingest_step(params, endpoints, max_toots=args.max_toots, duration_s=args.duration,
                                 while_live="refuse"), indent=2))
    return 0


def cmd_export(args) -> int:
    params, endpoints = _ctx(args)
    for msg in export(endpoints.bootstrap_servers, args.topic or params.kafka.topic, args.max, args.from_beginning):
        sys.stdout.write(json.dumps(msg, ensure_ascii=False) + "\n")
    return 0


def cmd_normalize(args) -> int:
    try:
        events = list(events_from_file(args.file))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(f"cannot read {args.file}: {exc}", file=sys.stderr)
        return 1
    for i, e in enumerate(events, 1):
        try:
            rec = normalize_event(e["event"], e["data"], e["instance"])
        except BadPayload as exc:
            print(f"event {i} ({e['event']}): {exc}", file=sys.stderr)
            continue
        sys.stdout.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return 0


def cmd_stream(args) -> int:
    from tootpipe.stream.query import finish, run_available_now, start_stream  # lazy: pyspark
    params, endpoints = _ctx(args)
    spark = get_spark(params)
    if not args.follow:
        print(json.dumps(run_available_now(spark, params, endpoints), indent=2))
        return 0
    query, sink = start_stream(spark, params, endpoints, available_now=False)
    stopping: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):  # a clean stop: the batch in flight finishes or is replayed
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    while query.isActive and not stopping:
        query.awaitTermination(1)
        if sink.last:
            logging.getLogger("tootpipe").info("last batch: %s", sink.last)
    if query.isActive:
        query.stop()
    try:
        finish(query, sink)  # the last batch read is in PostgreSQL
    except Exception as exc:  # noqa: BLE001 - one line, not a trace, for the user of the command
        print(f"tootpipe: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_batch(args) -> int:
    params, endpoints = _ctx(args)
    if args.job == "backfill" and (args.from_offsets or args.to_offsets):
        from tootpipe.batch.backfill import explicit_ranges  # lazy: pyspark
        latest = end_offsets(endpoints.bootstrap_servers, params.kafka.topic)
        try:
            ranges = explicit_ranges(_offsets(args.from_offsets), _offsets(args.to_offsets), latest)
        except ValueError as exc:
            print(f"tootpipe: {exc}", file=sys.stderr)
            return 2
        print(steps.dumps(steps.backfill_step(params, endpoints, ranges)))
        return 0
    if args.job == "backfill":
        print(steps.dumps(steps.backfill_step(params, endpoints)))
    else:
        fn = {"clean": steps.clean_step, "analytics": steps.analytics_step}[args.job]
        print(steps.dumps(fn(params, endpoints, force=args.force)))
    return 0


def _offsets(text: str | None) -> dict[int, int] | None:
    """"0=100,2=5" -> {0: 100, 2: 5}."""
    if not text:
        return None
    try:
        return {int(p): int(o) for p, o in (item.split("=") for item in text.split(","))}
    except ValueError:
        raise SystemExit(f"cannot read offsets {text!r}: write PARTITION=OFFSET[,PARTITION=OFFSET...]") from None


def cmd_sentiment(args) -> int:
    params = _params(args)
    if args.action == "train":
        print(steps.dumps(steps.train_step(params, args.variant, tune=args.tune, retrain=args.retrain)))
        return 0
    if args.action == "score":
        _, endpoints = _ctx(args)
        print(steps.dumps(steps.score_step(params, endpoints, args.model)))
        return 0
    from tootpipe.sentiment.scoring import predict  # lazy: pyspark
    from tootpipe.sentiment.store import latest_model, load_model  # lazy: pyspark
    from tootpipe.sentiment.training import LABELS, evaluate, load_labelled  # lazy: pyspark
    spark = get_spark(params)
    version = Path(args.model or latest_model(params.path(params.sentiment.model_dir)))
    language = args.language or "en"
    if language != "en":  # the model set's model for that language, as scoring routes its toots
        if not (version / "languages" / language / "model").is_dir():
            raise SystemExit(f"the model set {version.name} has no model for {language!r} (its toots are marked "
                             f"unsupported): it has {sorted(p.name for p in version.glob('languages/*'))}")
        version = version / "languages" / language
    model, _ = load_model(version)
    if args.action == "evaluate":
        m = evaluate(model, load_labelled(spark, args.data))
        keys = ("n", "accuracy", "macro_f1", "macro_recall", "macro_recall_ci", "per_class")
        print(json.dumps({k: m[k] for k in keys}))
        return 0
    lines = [line.rstrip("\n") for line in sys.stdin]
    if not lines:
        return 0
    df = spark.createDataFrame([(i, t) for i, t in enumerate(lines)], "i long, text string")
    for r in predict(model, df).orderBy("i").select("text", "sentiment_label", "probabilities").collect():
        print(json.dumps({"text": r["text"], "label": r["sentiment_label"],
                          "probabilities": dict(zip(LABELS, [round(p, 4) for p in r["probabilities"]]))},
                         ensure_ascii=False))
    return 0


def cmd_psql(args) -> int:
    """psql on the project database with its credentials (a temporary 0600 password file, never the command
    line); starts nothing: with the services down it says how to start them."""
    try:
        endpoints = services.endpoints(_params(args))
    except services.ServiceError:
        print("tootpipe psql: the embedded PostgreSQL is not running; start it with `tootpipe services up` "
              "(or `make run`)", file=sys.stderr)
        return 2
    try:
        binary = pg_binary("psql") if os.path.exists(pg_binary("psql")) else shutil.which("psql")
    except services.ServiceError:
        binary = shutil.which("psql")
    if not binary:
        print("tootpipe psql: no psql found (install postgresql-client)", file=sys.stderr)
        return 2
    u = urlsplit(endpoints.database_url)
    with tempfile.TemporaryDirectory(dir=services.state_dir()) as tmp:
        passfile = os.path.join(tmp, "pgpass")
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as fh:
            esc = lambda v: v.replace("\\", "\\\\").replace(":", "\\:")
            fh.write(f"{u.hostname}:{u.port}:*:{esc(unquote(u.username or ''))}:{esc(unquote(u.password or ''))}\n")
        cmd = [binary, "-h", u.hostname, "-p", str(u.port), "-U", unquote(u.username or "postgres"),
               "-d", u.path.lstrip("/"), *args.psql_args]
        return subprocess.call(cmd, env=child_env({"PGPASSFILE": passfile}))


# JupyterLab settings for this environment only (its app folder's overrides.json, never the user's home): a click
# on a notebook's .py opens it as a notebook (jupytext's viewer), and no prompt about Jupyter news
LAB_OVERRIDES = {
    "@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"python": "Jupytext Notebook"}},
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
}


def lab_overrides(app_dir: str | None = None):
    """Merge :data:`LAB_OVERRIDES` into the environment's `share/jupyter/lab/settings/overrides.json` (other
    plugins' and keys' settings kept as they are); returns its path."""
    if app_dir is None:
        from jupyterlab.commands import get_app_dir  # lazy: jupyterlab
        app_dir = get_app_dir()
    path = Path(app_dir) / "settings" / "overrides.json"
    current = json.loads(path.read_text()) if path.exists() else {}
    for plugin, values in LAB_OVERRIDES.items():
        merged = current.setdefault(plugin, {})
        for key, value in values.items():
            merged[key] = {**merged[key], **value} if isinstance(value, dict) and isinstance(merged.get(key), dict) \
                else value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=2) + "\n")
    return path


def cmd_lab(args) -> int:
    """JupyterLab on notebooks/ (the .py notebooks open as notebooks through jupytext), services started first."""
    services.up(_params(args))
    lab_overrides()
    root = project_root()
    cmd = [sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={root}", "--ServerApp.ip=127.0.0.1",
           "--LabApp.default_url=/lab/tree/notebooks", *(["--allow-root"] if os.geteuid() == 0 else []),
           *args.lab_args]
    print("tootpipe lab: open a notebook under notebooks/ (params/default.yaml is its default); Ctrl-C stops "
          "JupyterLab, `tootpipe services down` the services", file=sys.stderr, flush=True)
    os.chdir(root)
    os.execve(sys.executable, cmd, child_env())  # this process becomes JupyterLab: a signal to it reaches the server


def cmd_orchestrate(args) -> int:
    """The embedded services, then `dagster dev` (webserver, daemon, code server) on 127.0.0.1: the sensor runs the
    pipeline when new toots reach the topic, the schedule on its clock; history and logs in the state folder."""
    params = _params(args)
    services.up(params)
    port = args.port or params.orchestration.port
    cmd, env = command(args.params, port)
    print(f"tootpipe orchestrate: Dagster on http://127.0.0.1:{port} (runs, logs and history in "
          f"{env['DAGSTER_HOME']}); Ctrl-C stops it, `tootpipe services down` the services", file=sys.stderr,
          flush=True)
    os.chdir(project_root())
    # Started from a script (`make orchestrate &`), SIGINT arrives ignored, and Dagster maps SIGTERM to SIGINT's
    # handler: both would be ignored by Dagster and its children, and only kill -9 would stop them
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.execve(cmd[0], cmd, env)  # this process becomes Dagster: a signal to it reaches the webserver and daemon


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tootpipe", description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params/default.yaml", help="parameter file (default: %(default)s)")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("services", help="start, stop or show the embedded broker and PostgreSQL")
    s.add_argument("action", choices=["up", "down", "status"])
    s.set_defaults(fn=cmd_services)
    s = sub.add_parser("sample", help="write the deterministic sample events as JSONL")
    s.add_argument("--n", type=int, default=2000)
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--out")
    s.set_defaults(fn=cmd_sample)
    s = sub.add_parser("ingest", help="publish toots from the configured source into Kafka")
    s.add_argument("--source", choices=["sample", "replay", "poll", "stream"])
    s.add_argument("--replay", help="a .sse, JSON or JSONL recording to replay")
    s.add_argument("--max-toots", type=int)
    s.add_argument("--duration", type=float, help="seconds")
    s.add_argument("--rate", type=float, help="sample/replay: events per second (default: as fast as possible)")
    s.set_defaults(fn=cmd_ingest)
    s = sub.add_parser("export", help="write the topic's messages as JSONL (the newest --max, default 10)")
    s.add_argument("--max", type=int)
    s.add_argument("--from-beginning", action="store_true", help="from the oldest message (all, or --max)")
    s.add_argument("--topic")
    s.set_defaults(fn=cmd_export)
    s = sub.add_parser("normalize", help="normalise a JSONL or .sse recording to records on stdout")
    s.add_argument("file")
    s.set_defaults(fn=cmd_normalize)
    s = sub.add_parser("stream", help="run the streaming job (availableNow, or --follow)")
    s.add_argument("--follow", action="store_true")
    s.set_defaults(fn=cmd_stream)
    s = sub.add_parser("batch", help="batch jobs")
    s.add_argument("job", choices=["backfill", "clean", "analytics"])
    s.add_argument("--from", dest="from_offsets", metavar="P=OFFSET,...",
                   help="backfill: first offset per partition (default: everything not loaded yet)")
    s.add_argument("--to", dest="to_offsets", metavar="P=OFFSET,...",
                   help="backfill: end offset (exclusive) per partition (default: the current end)")
    s.add_argument("--force", action="store_true",
                   help="clean, analytics: compute even when nothing they read changed since their last run")
    s.set_defaults(fn=cmd_batch)
    s = sub.add_parser("sentiment", help="train, evaluate, predict, score")
    s.add_argument("action", choices=["train", "evaluate", "predict", "score"])
    s.add_argument("--variant", default=None, help="default: sentiment.variant from the parameters")
    s.add_argument("--tune", action="store_true", help="choose regParam on the training data (temporal holdout)")
    s.add_argument("--retrain", action="store_true", help="train even when a model from the same inputs is saved")
    s.add_argument("--data")
    s.add_argument("--model", help="a model set's folder (default: the newest)")
    s.add_argument("--language", help="evaluate, predict: the model the pipeline uses for this language (default en)")
    s.set_defaults(fn=cmd_sentiment)
    s = sub.add_parser("psql", help="psql on the project database (arguments go to psql)")
    s.add_argument("psql_args", nargs=argparse.REMAINDER)
    s.set_defaults(fn=cmd_psql)
    s = sub.add_parser("orchestrate", help="the services, then Dagster's UI and daemon on 127.0.0.1")
    s.add_argument("--port", type=int, help="the UI's port (default: orchestration.port, 3000)")
    s.set_defaults(fn=cmd_orchestrate)
    s = sub.add_parser("lab", help="JupyterLab on the notebooks (arguments go to jupyter lab)")
    s.add_argument("lab_args", nargs=argparse.REMAINDER)
    s.set_defaults(fn=cmd_lab)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough = None  # everything after `psql` / `lab` goes to psql / jupyter lab untouched
    i = 0
    while i < len(argv):
        if argv[i] in ("psql", "lab"):
            argv, passthrough = argv[:i + 1], argv[i + 1:]
            break
        if argv[i] == "--params":
            i += 2
            continue
        if not argv[i].startswith("-"):
            break
        i += 1
    args = build_parser().parse_args(argv)
    if passthrough is not None:
        setattr(args, f"{args.command}_args", passthrough)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.fn(args)
    except (ParamsError, ServiceError, KafkaUnavailable, DatabaseUnavailable, JavaMissing, FileNotFoundError,
            SourceError, WriterBusy) as exc:
        print(f"tootpipe: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
