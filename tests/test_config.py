import pytest

from tootpipe.core.config import ParamsError, load


def write(tmp_path, text):
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return p


def test_defaults_validate():
    p = load(None, use_env=False)
    assert p.kafka.partitions == 3 and p.kafka.topic == "mastodon_stream"


def test_bundled_parameter_files_validate():
    for name in ("default", "small", "live"):
        load(f"params/{name}.yaml", use_env=False)


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ParamsError, match=r"kafka\.partitons: unknown key"):
        load(write(tmp_path, "kafka:\n  partitons: 3\n"), use_env=False)


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ParamsError, match=r"analytics\.active_min"):
        load(write(tmp_path, "analytics:\n  active_min: lots\n"), use_env=False)


def test_secret_in_params_is_refused(tmp_path):
    with pytest.raises(ParamsError, match="secrets do not belong"):
        load(write(tmp_path, "database:\n  password: hunter2\n"), use_env=False)


def test_env_overrides_like_the_seed(monkeypatch):
    monkeypatch.setenv("FILTER_LANGUAGE", "en, de")
    monkeypatch.setenv("ACTIVE_MIN", "9")
    monkeypatch.setenv("EXCLUDE_REBLOGS", "false")
    p = load(None)
    assert p.filters.languages == ["en", "de"] and p.analytics.active_min == 9 and p.filters.exclude_reblogs is False


def test_bad_env_override_is_named(monkeypatch):
    monkeypatch.setenv("ACTIVE_MIN", "many")
    with pytest.raises(ParamsError, match=r"ACTIVE_MIN"):
        load(None)


def test_missing_file():
    with pytest.raises(ParamsError, match="not found"):
        load("params/nope.yaml", use_env=False)
