"""The model store: a trained model set is staged, then published as a version under `models/sentiment/<version>/`
(the Spark pipeline in `model/`, the language models in `languages/<code>/model`, and `metrics.json`); the newest
version is the default.

Guarantees: a version appears whole or not at all (staged in `.staging/`, renamed in one step); readers see
versions only. Loading a saved pipeline needs a running Spark session (the caller starts it).
"""
from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from pyspark.ml import PipelineModel

__all__ = ["stage_model", "publish_model", "save_model", "latest_model", "remember_models", "load_models",
           "model_version", "load_model"]


def stage_model(model: PipelineModel, model_dir: str | Path, folder: str | Path | None = None) -> Path:
    """Write a pipeline into `folder` (default: a new one) under `<model_dir>/.staging/`, where no reader looks
    (:func:`latest_model` and the model cache see versions only); :func:`publish_model` makes it a version."""
    folder = Path(folder) if folder else Path(model_dir) / ".staging" / uuid.uuid4().hex
    model.write().overwrite().save(str(folder / "model"))
    return folder


def publish_model(staged: str | Path, model_dir: str | Path, metrics: dict) -> Path:
    """A staged model set becomes the newest version: metrics.json is written into it, then the folder is renamed
    to `<model_dir>/<UTC version>/` in one step (a crash leaves no half-written version)."""
    version = base = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    n = 1
    while (Path(model_dir) / version).exists():  # two saves in one second: later ones sort after
        n += 1
        version = f"{base}-{n}"
    (Path(staged) / "metrics.json").write_text(json.dumps({"version": version, **metrics}, indent=2))
    out = Path(model_dir) / version
    Path(staged).rename(out)
    return out


def save_model(model: PipelineModel, model_dir: str | Path, metrics: dict) -> Path:
    """Save under `<model_dir>/<UTC version>/` with metrics.json (staged, then published); returns the folder."""
    return publish_model(stage_model(model, model_dir), model_dir, metrics)


def latest_model(model_dir: str | Path) -> Path:
    versions = sorted(p for p in Path(model_dir).glob("*/model") if p.is_dir())
    if not versions:
        raise FileNotFoundError(f"no trained model under {model_dir}: run `tootpipe sentiment train`")
    return versions[-1].parent


_SAVED_SETS: dict[str, dict] = {}  # model sets this process saved, by folder: what it wrote, kept in memory


def remember_models(path: str | Path, models: dict[str, PipelineModel]) -> None:
    """Keep a model set this process has just saved under `path`, so that :func:`load_models` of that folder in
    the same process (notebook 05 scores right after training) does not read back from disk what it wrote
    (loading eight pipelines takes 12-20 s here: each stage is read by small Spark jobs)."""
    _SAVED_SETS[str(Path(path).resolve())] = dict(models)


def load_models(path: str | Path) -> tuple[dict[str, PipelineModel], str]:
    """The model set of a version: {"en": SemEval model, code: XLM-T model, ...} and the version (the language
    models are read in parallel)."""
    saved = _SAVED_SETS.get(str(Path(path).resolve()))
    if saved is not None:
        return dict(saved), model_version(path)
    subs = sorted(Path(path).glob("languages/*/model"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        english = pool.submit(load_model, path)
        others = pool.map(lambda sub: PipelineModel.load(str(sub)), subs)
        models = {sub.parent.name: m for sub, m in zip(subs, others)}
        model, version = english.result()
    return {"en": model, **models}, version


def model_version(path: str | Path) -> str:
    """The version of a model set folder (`<version>/`) or of its pipeline folder (`<version>/model`)."""
    p = Path(path)
    return p.name if (p / "model").is_dir() else p.parent.name


def load_model(path: str | Path) -> tuple[PipelineModel, str]:
    p = Path(path)
    return PipelineModel.load(str(p / "model" if (p / "model").is_dir() else p)), model_version(p)
