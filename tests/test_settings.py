"""Settings: defaults, TOML, env and override precedence, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from oddsfeed.settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_defaults() -> None:
    """With no input every setting has its documented default."""
    settings = load_settings(None, {}, {})
    assert settings == Settings()
    assert settings.redis.url == ""
    assert settings.redis.history_len == 1000
    assert settings.server.ws_port == 8765
    assert settings.server.http_port == 8080
    assert settings.server.gc_threshold == 10_000
    assert settings.fanout.heartbeat_ms == 15000
    assert settings.fanout.batch_window_ms == 2
    assert settings.fanout.batch_window_max_ms == 20
    assert settings.fanout.batch_min_busy == 0.4
    assert settings.fanout.max_outbox_bytes == 8388608
    assert settings.api.cors_origins == []
    assert settings.auth.anonymous_read is False
    assert settings.ingest.mapping_file == "config/mappings.toml"
    assert settings.demo.events == 4
    assert settings.log.format == "auto"


def test_toml_sets_values() -> None:
    """TOML tables map onto sections."""
    text = '[server]\nws_port = 9001\n[api]\ncors_origins = ["https://a.example"]\n'
    settings = load_settings(text, {}, {})
    assert settings.server.ws_port == 9001
    assert settings.api.cors_origins == ["https://a.example"]
    assert settings.server.http_port == 8080
    assert settings.server.gc_threshold == 10_000


def test_env_overrides_toml() -> None:
    """ODDSFEED_<SECTION>__<KEY> beats the TOML, is coerced, and any case works."""
    env = {
        "ODDSFEED_FANOUT__HEARTBEAT_MS": "5000",
        "ODDSFEED_REDIS__URL": "redis://db:6379",
        "oddsfeed_auth__anonymous_read": "true",
        "ODDSFEED_FANOUT__MAX_LAG_S": "2.5",
        "ODDSFEED_CONFIG": "ignored.toml",
        "PATH": "/bin",
    }
    settings = load_settings("[fanout]\nheartbeat_ms = 1000\n", env, {})
    assert settings.fanout.heartbeat_ms == 5000
    assert settings.redis.url == "redis://db:6379"
    assert settings.auth.anonymous_read is True
    assert settings.fanout.max_lag_s == 2.5


def test_env_lists_take_json_or_commas() -> None:
    """List settings from env accept a JSON list or comma-separated text."""
    comma = load_settings(None, {"ODDSFEED_API__CORS_ORIGINS": "https://a, https://b"}, {})
    assert comma.api.cors_origins == ["https://a", "https://b"]
    as_json = load_settings(None, {"ODDSFEED_AUTH__PUBLIC_KEYS": '["k1", "k,2"]'}, {})
    assert as_json.auth.public_keys == ["k1", "k,2"]
    empty = load_settings(None, {"ODDSFEED_API__CORS_ORIGINS": ""}, {})
    assert empty.api.cors_origins == []


def test_overrides_beat_env_and_skip_none() -> None:
    """Dotted overrides beat env; a None override (an unset flag) changes nothing."""
    env = {"ODDSFEED_SERVER__WS_PORT": "7000", "ODDSFEED_SERVER__HOST": "0.0.0.0"}
    settings = load_settings(
        "[server]\nws_port = 6000\n", env, {"server.ws_port": 7100, "server.host": None}
    )
    assert settings.server.ws_port == 7100
    assert settings.server.host == "0.0.0.0"


def test_unknown_key_names_its_path() -> None:
    """An unknown key in any source is an error naming section.key."""
    with pytest.raises(SettingsError, match=r"fanout\.heartbeat: unknown setting"):
        load_settings("[fanout]\nheartbeat = 5\n", {}, {})
    with pytest.raises(SettingsError, match=r"serverr: unknown setting"):
        load_settings(None, {"ODDSFEED_SERVERR__WS_PORT": "1"}, {})
    with pytest.raises(SettingsError, match=r"nope: unknown setting"):
        load_settings("nope = 1\n", {}, {})


def test_bad_type_names_its_path() -> None:
    """A value of the wrong type is a lower-case error naming section.key."""
    with pytest.raises(SettingsError) as info:
        load_settings(None, {"ODDSFEED_FANOUT__HEARTBEAT_MS": "soon"}, {})
    assert str(info.value).startswith("fanout.heartbeat_ms: input should be a valid integer")
    assert info.value.problems[0][0] == "fanout.heartbeat_ms"


def test_every_problem_is_reported() -> None:
    """All bad keys are reported together, each with its path."""
    text = '[redis]\nhistory_len = 10\n[log]\nformat = "xml"\n[server]\nws_port = 70000\n'
    with pytest.raises(SettingsError) as info:
        load_settings(text, {}, {})
    paths = [path for path, _ in info.value.problems]
    assert paths == ["redis.history_len", "server.ws_port", "log.format"]
    assert "greater than or equal to 500" in str(info.value)


def test_invalid_toml_is_a_settings_error() -> None:
    """Malformed TOML raises SettingsError, not a parser exception."""
    with pytest.raises(SettingsError, match="invalid toml"):
        load_settings("[server\n", {}, {})


def test_log_level_is_case_insensitive() -> None:
    """Log level and format accept any case."""
    settings = load_settings(None, {"ODDSFEED_LOG__LEVEL": "DEBUG"}, {"log.format": "JSON"})
    assert (settings.log.level, settings.log.format) == ("debug", "json")


def test_worker_count() -> None:
    """workers = 0 means one per CPU; an explicit count wins."""
    assert load_settings(None, {}, {}).server.worker_count(8) == 8
    assert load_settings(None, {}, {}).server.worker_count(None) == 1
    assert load_settings(None, {}, {"server.workers": 3}).server.worker_count(8) == 3


def test_settings_are_immutable() -> None:
    """Settings cannot be changed after loading."""
    settings = load_settings(None, {}, {})
    with pytest.raises(ValueError, match="frozen"):
        settings.server.ws_port = 1  # type: ignore[misc]


@pytest.mark.parametrize("name", ["oddsfeed.toml", "production.example.toml"])
def test_shipped_config_files_load(name: str) -> None:
    """The shipped config files are valid settings."""
    settings = load_settings((ROOT / "config" / name).read_text(), {}, {})
    assert settings.auth.anonymous_read is (name == "oddsfeed.toml")
    if name == "production.example.toml":
        assert settings.auth.hs256_secret == ""
