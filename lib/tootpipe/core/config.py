"""Parameters: one YAML file per run, validated on load, with the original assignment's `.env` variables as overrides.

Guarantees: an unknown key or a wrong type raises :class:`ParamsError` naming the key (``kafka.partitons:
unknown key``), never a stack trace from deep inside. Secrets (Mastodon token, database password) are never
parameters: they come from the environment or `.env` through :func:`secret`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tootpipe.core.errors import ParamsError
from tootpipe.core.paths import project_root
from tootpipe.core.variants import DEFAULT_VARIANT, VARIANTS

__all__ = [
    "Params", "ParamsError", "load", "project_root", "secret", "redact", "register_secret", "child_env",
    "ENV_OVERRIDES", "SECRET_NAMES", "credential_names", "env_file", "server_env",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, validate_assignment=True)


# a name that becomes a folder (report runs, checkpoints): one path part, never "..", a hidden name or a separator
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class RunParams(_Strict):
    name: str = Field("default", pattern=NAME)
    # a batch step (backfill, clean, analytics, scoring) waits this long for another batch writer of the same
    # database to finish, then refuses naming it (tootpipe.postgres.locks)
    lock_wait_s: float = Field(600, ge=0)


class KafkaParams(_Strict):
    bootstrap_servers: str | None = None  # None: start the embedded Apache Kafka
    topic: str = "mastodon_stream"
    dlq_topic: str = "mastodon_stream_dlq"
    partitions: int = Field(3, ge=1)
    replication_factor: int = Field(1, ge=1)


class DatabaseParams(_Strict):
    url: str | None = None  # None: start the embedded PostgreSQL; password from DB_PASSWORD
    user: str | None = None
    # the embedded PostgreSQL's database for these parameters (created when missing; None: its default `tootpipe`),
    # so the live demo's rows never mix with the sample's; with `url`, the URL names the database
    name: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]{0,62}$")

    @model_validator(mode="after")
    def _name_is_for_the_embedded_server(self):
        if self.url and self.name:
            raise ValueError("database.name names a database of the embedded PostgreSQL; with database.url, "
                             "put the database in the URL")
        return self


class SourceParams(_Strict):
    kind: Literal["sample", "replay", "poll", "stream"] = "sample"
    sample_n: int = Field(2000, ge=0)
    sample_seed: int = 42
    replay_path: str | None = None
    instances: list[str] = ["https://mastodon.social"]
    timeline: str = Field("public", pattern=r"^(public|public:local|tag:\w+)$")
    watchdog_s: float = Field(60.0, gt=0)          # reconnect when no event or heartbeat came for this long
    reconnect_base_s: float = Field(1.0, gt=0)     # first backoff delay; doubles up to reconnect_max_s, jittered
    reconnect_max_s: float = Field(60.0, gt=0)
    poll_interval_s: float = Field(5.0, gt=0)
    request_timeout_s: float = Field(30.0, gt=0)
    # bounds on what an instance sends (over one: cut to the dead letters, or the request fails and is retried)
    max_line_bytes: int = Field(4 << 20, ge=1024)   # one line of the event stream
    max_event_bytes: int = Field(4 << 20, ge=1024)  # one streamed event's data
    max_page_bytes: int = Field(32 << 20, ge=1024)  # one REST response body, counted after decompression
    rate: float | None = Field(None, gt=0)         # sample/replay: events per second (None: as fast as possible)
    token_instance: str | None = None              # the instance that issued the token (default $MASTODON_BASE_URL)
    poll_with_token: bool = False                  # public timelines need no token: polling sends none unless asked
    resume: bool = True                            # poll/stream: start after the newest status already in the topic
    republish: bool = False                        # sample/replay: send it again though the topic holds it
    max_toots: int | None = Field(None, ge=1)
    duration_s: float | None = Field(None, gt=0)


class FilterParams(_Strict):
    languages: list[str] = []
    keywords: list[str] = []
    exclude_reblogs: bool = True
    exclude_replies: bool = False
    public_only: bool = True
    respect_opt_out: bool = True


class SparkParams(_Strict):
    master: str = "local[*]"
    driver_memory: str = "2g"
    shuffle_partitions: int = Field(4, ge=1)
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = "ERROR"


class StreamParams(_Strict):
    query_name: str = Field("toots_to_postgres", pattern=NAME)
    trigger: Literal["available_now", "processing_time"] = "available_now"
    processing_time: str = "5 seconds"
    max_offsets_per_trigger: int = Field(50000, ge=1)
    watermark_minutes: int = Field(10, ge=0)
    checkpoint_dir: str = ".tootpipe/checkpoints"
    # apply each batch in PostgreSQL while Spark reads the next (exactly-once either way: stream_sink)
    overlap_apply: bool = True


class AnalyticsParams(_Strict):
    active_min: int = Field(5, ge=1)  # active_users_gtX: users with more toots than this


class SentimentParams(_Strict):
    train_path: str = "data/sentiment/semeval_2013_2016_train.tsv.gz"
    dev_path: str = "data/sentiment/semeval2017_dev.tsv"
    val_path: str = "data/sentiment/tweeteval_val.tsv"
    xlmt_dir: str = "data/sentiment/xlmt"
    model_dir: str = "models/sentiment"
    variant: Literal[tuple(VARIANTS)] = DEFAULT_VARIANT  # type: ignore[valid-type]
    reg_param: float | None = Field(None, gt=0)  # for `variant`, instead of its own (`train --tune` chooses one)
    # trained and cross-validated beside `variant` in notebook 05 (bench/sentiment.py measures every variant)
    compare: list[Literal[tuple(VARIANTS)]] = ["stopword_tfidf"]  # type: ignore[valid-type]
    cv_folds: int = Field(1, ge=1, le=4)  # newest time folds scored by the cross-validation (5 slices in all)
    train_limit: int | None = Field(None, ge=100)
    languages: list[str] = ["en"]
    min_language_recall: float = Field(0.6, ge=0, le=1)  # a language model below this is not used
    # the other languages' models: a multilingual encoder (x86-64 Linux) or n-grams learnt per language (faster,
    # weaker: kept at 0.45 they cover more languages at 0.53-0.60; docs/performance.md)
    language_variant: Literal["balanced_ngrams", "multilingual_e5"] = "multilingual_e5"
    retrain: bool = False  # train again even when a model set trained from the same inputs is saved


class ReportParams(_Strict):
    dir: str = "reports"


class OrchestrationParams(_Strict):
    cron: str = Field("*/30 * * * *", pattern=r"^\S+( \S+){4}$")  # the refresh schedule (five cron fields)
    schedule: bool = False   # the schedule starts switched on (live parameters); the sensor always is
    port: int = Field(3000, ge=1024, le=65535)
    retries: int = Field(1, ge=0, le=10)  # a failed stage is tried again this many times within a run


class Params(_Strict):
    run: RunParams = RunParams()
    kafka: KafkaParams = KafkaParams()
    database: DatabaseParams = DatabaseParams()
    source: SourceParams = SourceParams()
    filters: FilterParams = FilterParams()
    spark: SparkParams = SparkParams()
    stream: StreamParams = StreamParams()
    analytics: AnalyticsParams = AnalyticsParams()
    sentiment: SentimentParams = SentimentParams()
    reports: ReportParams = ReportParams()
    orchestration: OrchestrationParams = OrchestrationParams()

    def path(self, relative: str) -> Path:
        """A project-relative path from the parameters, made absolute."""
        p = Path(relative)
        return p if p.is_absolute() else project_root() / p


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _bool(value: str) -> bool:
    if value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if value.strip().lower() in {"0", "false", "no", "off", ""}:
        return False
    raise ParamsError(f"cannot read {value!r} as true/false")


# The original assignment's .env variables, honoured as overrides of the parameters: NAME -> (dotted key, converter).
ENV_OVERRIDES: dict[str, tuple[str, Any]] = {
    "KAFKA_BOOTSTRAP": ("kafka.bootstrap_servers", str),
    "KAFKA_TOPIC": ("kafka.topic", str),
    "JDBC_URL": ("database.url", str),
    "DATABASE_URL": ("database.url", str),
    "DB_USER": ("database.user", str),
    "EXCLUDE_REBLOGS": ("filters.exclude_reblogs", _bool),
    "FILTER_LANGUAGE": ("filters.languages", _csv),
    "FILTER_KEYWORDS": ("filters.keywords", _csv),
    "ACTIVE_MIN": ("analytics.active_min", int),
    "MASTODON_BASE_URL": ("source.instances", lambda v: _csv(v)),
}

SECRET_NAMES = ("MASTODON_ACCESS_TOKEN", "DB_PASSWORD")
_SECRETS = set(SECRET_NAMES)
_REGISTERED: set[str] = set()  # secret values made at run time (the embedded PostgreSQL's password)


def env_file() -> Path:
    """The `.env` file read for secrets and overrides: ``$TOOTPIPE_ENV_FILE`` when set (the test suite points it at
    an empty file, so a user's `.env`, with the live services in it, never reaches the suite's runs), else `.env` in
    the project."""
    env = os.environ.get("TOOTPIPE_ENV_FILE")
    return Path(env) if env else project_root() / ".env"


def _dotenv() -> dict[str, str]:
    return {k: v for k, v in dotenv_values(env_file()).items() if v is not None}


def _load_dotenv() -> None:
    """Put the `.env` overrides into the environment, but not the secrets: whatever sits in os.environ is inherited
    by every process started later (the broker, PostgreSQL, Spark and its workers)."""
    for k, v in _dotenv().items():
        if k not in _SECRETS:
            os.environ.setdefault(k, v)


def secret(name: str) -> str | None:
    """A secret from the environment or `.env`; never from parameters, never copied into the environment."""
    if name not in _SECRETS:
        raise KeyError(f"{name} is not a known secret")
    value = os.environ.get(name) or _dotenv().get(name) or None
    if value:
        _REGISTERED.add(value)
    return value


def register_secret(value: str | None) -> None:
    """A value :func:`redact` must hide from now on (a generated password)."""
    if value:
        _REGISTERED.add(value)


_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<pw>[^@/\s]*)@")
_QUERY_SECRETS = re.compile(r"(?i)\b(password|access_token|token)=([^&\s'\"]+)")


def redact(value: Any) -> Any:
    """The value with every secret hidden: passwords in URLs (``user:***@``), ``password=``/``token=`` query
    parameters, and every known secret value (from the environment, `.env` or generated) wherever it appears.
    Strings, and dicts/lists of them, recursively; other values unchanged. The one function used wherever a URL
    or the parameters reach a report, a log line, an exception or a bench result."""
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    if not isinstance(value, str):
        return value
    out = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", value)
    out = _QUERY_SECRETS.sub(lambda m: f"{m.group(1)}=***", out)
    known = {v for v in (os.environ.get(n) for n in SECRET_NAMES) if v} | _REGISTERED
    for v in sorted(known, key=len, reverse=True):
        if len(v) >= 4:
            out = out.replace(v, "***")
    return out


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a process the project starts: the current one without the secrets, which none of
    them needs (the pipeline hands each what it needs explicitly)."""
    return {**{k: v for k, v in os.environ.items() if k not in _SECRETS}, **(extra or {})}


_DRIVER_GATEWAY = ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET")  # whoever holds both drives the Spark JVM


def _carries_password(value: str) -> bool:
    m = _URL_CREDENTIALS.search(value)
    return bool(m and m["pw"]) or bool(_QUERY_SECRETS.search(value))


def credential_names() -> list[str]:
    """The variables of the environment that a process needing no credential must not inherit: the secrets and any
    whose value holds a password (a URL's ``user:password@`` or a ``password=`` parameter)."""
    return [k for k, v in os.environ.items() if k in _SECRETS or _carries_password(v)]


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a server the project starts (Kafka, PostgreSQL and the tools that prepare them):
    :func:`child_env` without the shared Spark driver's gateway port and secret and without any variable whose
    value holds a password (a URL's ``user:password@`` or a ``password=`` parameter: `JDBC_URL`, `DATABASE_URL`
    from `.env`). A server needs none of them, and its environment is readable wherever its process is."""
    return {k: v for k, v in child_env(extra).items() if k not in _DRIVER_GATEWAY and not _carries_password(v)}


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ParamsError(f"{dotted}: {k} is not a section")
    node[keys[-1]] = value


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(x) for x in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key")
        else:
            lines.append(f"{key}: {e['msg']} (got {redact(repr(e.get('input')))})")
    return f"invalid parameters in {origin}:\n  " + "\n  ".join(lines)


def load(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
         use_env: bool = True) -> Params:
    """Read and validate a parameter file.

    Args:
        path: YAML file (relative paths are taken from the project root); None gives the defaults.
        overrides: dotted keys to values, applied after the file (``{"source.sample_n": 100}``).
        use_env: apply the original assignment's `.env` variables (:data:`ENV_OVERRIDES`) on top.
    Returns:
        The validated :class:`Params`.
    Raises:
        ParamsError: naming the offending key.
    """
    tree: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        p = Path(path)
        if not p.is_absolute() and not p.exists():
            p = project_root() / p
        if not p.exists():
            raise ParamsError(f"parameter file not found: {path}")
        origin = str(p)
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ParamsError(redact(f"{origin} is not valid YAML: {exc}")) from None
        if not isinstance(tree, dict):
            raise ParamsError(f"{origin}: the top level must be a mapping of sections")
    for k in ("database.password", "mastodon.access_token"):
        section, key = k.split(".")
        if isinstance(tree.get(section), dict) and key in tree[section]:
            raise ParamsError(f"{k}: secrets do not belong in parameters; set it in the environment or .env")
    for dotted, value in (overrides or {}).items():
        _set_dotted(tree, dotted, value)
    if use_env:
        _load_dotenv()
        for name, (dotted, conv) in ENV_OVERRIDES.items():
            raw = os.environ.get(name)
            if raw:
                try:
                    _set_dotted(tree, dotted, conv(raw))
                except (ValueError, ParamsError) as exc:
                    raise ParamsError(redact(f"{dotted} (from ${name}): {exc}")) from None
    try:
        return Params.model_validate(tree)
    except ValidationError as err:
        raise ParamsError(_format_errors(err, origin)) from None
