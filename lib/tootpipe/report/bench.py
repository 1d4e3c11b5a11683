"""The last results of the `bench/` scripts (bench/results/<name>.json), as the notebooks show them."""
from __future__ import annotations

import json

import pandas as pd

from tootpipe.core.paths import project_root

__all__ = ["bench_result", "bench_variants"]


def bench_result(name: str):
    """The last `bench/<name>.py` result (bench/results/<name>.json) as a one-column table, flat keys only; or a
    sentence saying how to produce it."""
    path = project_root() / "bench" / "results" / f"{name}.json"
    if not path.exists():
        return f"no benchmark result yet: run `python bench/{name}.py`"
    data = json.loads(path.read_text())
    return pd.Series({k: v for k, v in data.items() if not isinstance(v, (dict, list))}, dtype=object) \
        .to_frame(f"bench/{name}.py")


def bench_variants(name: str = "sentiment"):
    """The per-variant table of the last `bench/<name>.py` result (its "variants" entry), or a sentence."""
    path = project_root() / "bench" / "results" / f"{name}.json"
    variants = json.loads(path.read_text()).get("variants") if path.exists() else None
    if not variants:
        return f"no per-variant benchmark result yet: run `python bench/{name}.py`"
    return pd.DataFrame(variants).T
