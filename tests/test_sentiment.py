import pytest

from tootpipe import sentiment

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_train_evaluate_predict_on_edge_cases(spark, tmp_path):
    model, secs = sentiment.train(spark, "data/sentiment/semeval_2013_2016_train.tsv.gz", "balanced_ngrams", 5000)
    m = sentiment.evaluate(model, sentiment.load_labelled(spark, "data/sentiment/semeval2017_dev.tsv", 600))
    assert m["n"] == 600 and 0.34 < m["macro_recall"] <= 1  # better than chance on held-out newer tweets
    out = sentiment.save_model(model, tmp_path, {"dev": m})
    loaded, version = sentiment.load_model(sentiment.latest_model(tmp_path))
    assert version == out.name
    texts = ["", "😀😀🎉", "word " * 20000, "Je suis très content", "I hate this, it is awful :("]
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "i long, text string")
    rows = sentiment.predict(loaded, df).orderBy("i").collect()
    assert len(rows) == 5 and all(r["sentiment"] in (-1, 0, 1) for r in rows)
    assert rows[4]["sentiment_label"] == "negative"


def test_bad_training_file_is_a_clear_error(spark, tmp_path):
    p = tmp_path / "x.tsv"
    p.write_text("sentence\tpolarity\nhi\tpositive\n")
    with pytest.raises(ValueError, match="columns `text` and `label`"):
        sentiment.load_labelled(spark, p)
