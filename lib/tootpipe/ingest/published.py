"""A deterministic source (the bundled sample, a replay file) is published into a topic once: a rerun finds it there.

Guarantees: after a complete publish of a sample or a replay, its fingerprint (the source parameters, the replay
file's bytes, the filters, `max_toots`, the Kafka cluster and topic) is recorded with the ingest's figures and the
topic's offsets before and after, in `<state dir>/published.json`. A later ingest with the same fingerprint sends
nothing and returns the recorded figures (`"reused": true`) while the topic still holds those messages (its start
offsets not past the recorded start, its end offsets not before the recorded end); a recreated or truncated topic,
any other source setting or `source.republish: true` publishes again. Live sources (poll, stream) always run.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

from tootpipe.core.config import Params
from tootpipe.core.fingerprint import fingerprint
from tootpipe.core.paths import state_dir, write_atomic

__all__ = ["source_key", "already_published", "record_published"]


def _path():
    return state_dir() / "published.json"


def _records() -> dict:
    try:
        return json.loads(_path().read_text())
    except (OSError, ValueError):
        return {}


def source_key(params: Params, cluster: str, max_toots: int | None) -> str | None:
    """The fingerprint of a deterministic source's publish, or None for a live source."""
    s = params.source
    if s.kind not in ("sample", "replay"):
        return None
    files = (params.path(s.replay_path),) if s.kind == "replay" and s.replay_path else ()
    return fingerprint({"kind": s.kind, "sample_n": s.sample_n, "sample_seed": s.sample_seed,
                        "filters": params.filters.model_dump(), "max_toots": max_toots, "cluster": cluster,
                        "topic": params.kafka.topic, "dlq": params.kafka.dlq_topic}, files=files)


def already_published(key: str, starts: dict[int, int], ends: dict[int, int]) -> dict | None:
    """The recorded figures of the publish under `key` if the topic (now from `starts` to `ends`) still holds it."""
    rec = _records().get(key)
    if rec is None:
        return None
    before, after = ({int(p): o for p, o in rec[k].items()} for k in ("start_offsets", "end_offsets"))
    holds = all(p in ends and starts.get(p, 0) <= before.get(p, 0) and ends[p] >= o for p, o in after.items())
    return {**rec["stats"], "reused": True, "published_at": rec["at"]} if holds else None


def record_published(key: str, stats: dict, starts: dict[int, int], ends: dict[int, int]) -> None:
    """Record a complete publish (`starts`: the topic's end offsets before it, `ends`: after)."""
    records = _records()
    records[key] = {"stats": stats, "start_offsets": starts, "end_offsets": ends,
                    "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_atomic(_path(), json.dumps(records, indent=1))
