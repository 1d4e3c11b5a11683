"""Where live ingest resumes: per instance, the newest status id the topic already holds (the topic is the one
source of truth for where ingest stopped)."""
from __future__ import annotations

import json

from tootpipe.core.errors import KafkaUnavailable
from tootpipe.ingest.instance import status_id_key
from tootpipe.kafka.admin import end_offsets, start_offsets
from tootpipe.kafka.reader import read_range

__all__ = ["newest_status_ids"]


def newest_status_ids(bootstrap: str, topic: str, hosts: list[str], tail: int = 2000,
                      max_tail: int = 50_000) -> dict[str, str]:
    """Per instance host, the newest status id already in the topic (the topic is the one source of truth for
    where ingest stopped). Reads the last `tail` messages of each partition, further back (up to `max_tail`) while
    some host is still unseen. Hosts never published are left out."""
    try:
        ends = end_offsets(bootstrap, topic)
    except KafkaUnavailable:
        return {}
    starts = start_offsets(bootstrap, topic, list(ends))
    found: dict[str, str] = {}
    done = {p: e for p, e in ends.items()}  # per partition: where the part already read begins
    while True:
        for p, e in ends.items():
            lo = max(starts[p], e - tail)
            for msg in read_range(bootstrap, topic, p, lo, done[p]):
                try:
                    rec = json.loads(msg.value())
                except (TypeError, ValueError):
                    continue
                if not isinstance(rec, dict) or rec.get("event") not in ("update", "status.update"):
                    continue
                host, sid = rec.get("instance"), rec.get("id")
                if host in hosts and isinstance(sid, str) and (
                        host not in found or status_id_key(sid) > status_id_key(found[host])):
                    found[host] = sid
            done[p] = lo
        if set(hosts) <= set(found) or tail >= max_tail or all(done[p] <= starts[p] for p in ends):
            return found
        tail *= 4
