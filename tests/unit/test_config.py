"""PRROOM_* settings: defaults, parsing, and one-line errors naming the bad key."""
from __future__ import annotations

import pytest

from prroom.core.config import (
    DEFAULT_SOCKETIO_CLIENT_INTEGRITY,
    DEFAULT_SOCKETIO_CLIENT_URL,
    DEFAULTS,
    SETTINGS,
    SETTINGS_BY_KEY,
    ConfigError,
    Settings,
    from_environ,
)


def config_error(config) -> str:
    with pytest.raises(ConfigError) as info:
        Settings.from_mapping(config)
    return str(info.value)


def test_defaults_are_valid():
    settings = Settings.from_mapping({})
    # every field is its declared default, unchanged by validation
    assert settings == Settings(**{setting.name: setting.default for setting in SETTINGS})
    # a few a user relies on, spelled out
    assert (settings.max_message_length, settings.max_username_length) == (4000, 64)
    assert (settings.ping_interval, settings.ping_timeout) == (25.0, 20.0)
    assert settings.auth_mode == "none" and settings.message_queue == ""
    assert settings.socketio_client_url == DEFAULT_SOCKETIO_CLIENT_URL
    assert settings.socketio_client_integrity == DEFAULT_SOCKETIO_CLIENT_INTEGRITY
    # The DEFAULTS mapping (what init_app puts into app.config) is itself valid.
    assert Settings.from_mapping(DEFAULTS) == settings


def test_every_setting_is_a_prroom_key_with_a_description():
    assert set(SETTINGS_BY_KEY) == set(DEFAULTS)
    for setting in SETTINGS:
        assert setting.key.startswith("PRROOM_")
        assert setting.description


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_unrelated_keys_are_ignored():
    assert Settings.from_mapping({"SECRET_KEY": "x", "DEBUG": True}) == Settings.from_mapping({})


def test_valid_overrides():
    settings = Settings.from_mapping({
        "PRROOM_URL_PREFIX": "/chat/", "PRROOM_MAX_MESSAGE_LENGTH": 10,
        "PRROOM_MAX_USERNAME_LENGTH": "12", "PRROOM_TYPING_TIMEOUT": 0.05,
        "PRROOM_PING_INTERVAL": 3, "PRROOM_ASYNC_MODE": "threading",
        "PRROOM_CORS_ALLOWED_ORIGINS": ["https://a.example", " https://b.example "]})
    assert settings.url_prefix == "/chat"  # trailing slash dropped
    assert settings.max_message_length == 10
    assert settings.max_username_length == 12
    assert settings.typing_timeout == 0.05
    assert settings.ping_interval == 3.0 and isinstance(settings.ping_interval, float)
    assert settings.async_mode == "threading"
    assert settings.cors_allowed_origins == ("https://a.example", "https://b.example")


def test_root_url_prefix_means_no_prefix():
    assert Settings.from_mapping({"PRROOM_URL_PREFIX": "/"}).url_prefix == ""


@pytest.mark.parametrize("key, value", [
    ("PRROOM_MAX_MESSAGE_LENGTH", "lots"),
    ("PRROOM_MAX_MESSAGE_LENGTH", "4000.0"),
    ("PRROOM_MAX_MESSAGE_LENGTH", 0),
    ("PRROOM_MAX_MESSAGE_LENGTH", -5),
    ("PRROOM_MAX_MESSAGE_LENGTH", 1_000_001),
    ("PRROOM_MAX_MESSAGE_LENGTH", True),
    ("PRROOM_MAX_MESSAGE_LENGTH", None),
    ("PRROOM_MAX_USERNAME_LENGTH", 1025),
    ("PRROOM_MAX_USERNAME_LENGTH", False),
    ("PRROOM_MAX_FRAME_BYTES", 1023),
    ("PRROOM_TYPING_TIMEOUT", "soon"),
    ("PRROOM_TYPING_TIMEOUT", 0.01),
    ("PRROOM_TYPING_TIMEOUT", True),
    ("PRROOM_PING_INTERVAL", "inf"),
    ("PRROOM_PING_TIMEOUT", 0),
    ("PRROOM_ASYNC_MODE", "eventlet"),
    ("PRROOM_ASYNC_MODE", "Threading"),
    ("PRROOM_ASYNC_MODE", 1),
    ("PRROOM_URL_PREFIX", 5),
    ("PRROOM_SOCKETIO_PATH", None),
    ("PRROOM_CORS_ALLOWED_ORIGINS", 5),
], ids=lambda v: v if isinstance(v, str) and v.startswith("PRROOM") else repr(v))
def test_bad_value_raises_config_error_naming_key(key, value):
    message = config_error({key: value})
    assert message.startswith(f"{key}={value!r}: expected ")
    assert SETTINGS_BY_KEY[key].expected() in message
    assert "\n" not in message  # one line, no traceback text


@pytest.mark.parametrize("prefix", ["chat", "chat/", " /chat"])
def test_url_prefix_without_leading_slash(prefix):
    message = config_error({"PRROOM_URL_PREFIX": prefix})
    assert message.startswith(f"PRROOM_URL_PREFIX={prefix!r}: ")
    assert "/" in message.split(":", 1)[1]


def test_choices_are_listed():
    assert config_error({"PRROOM_ASYNC_MODE": "eventlet"}).endswith(
        "expected one of auto, gevent, threading")


def test_error_names_the_bad_key_among_good_ones():
    message = config_error({"PRROOM_MAX_MESSAGE_LENGTH": 10, "PRROOM_PING_TIMEOUT": "x",
                            "PRROOM_ASYNC_MODE": "threading"})
    assert message.startswith("PRROOM_PING_TIMEOUT=")


def test_range_is_in_message():
    message = config_error({"PRROOM_MAX_USERNAME_LENGTH": 0})
    assert "integer" in message and "1024" in message


@pytest.mark.parametrize("raw, expected", [
    ("", None),
    ("   ", None),
    (" , ,", None),
    (None, None),
    ([], None),
    ("*", ("*",)),
    ("https://a.example", ("https://a.example",)),
    ("a, b", ("a", "b")),
    ("a,b,,c ,", ("a", "b", "c")),
    (("x", "y"), ("x", "y")),
])
def test_cors_origins_parsing(raw, expected):
    settings = Settings.from_mapping({"PRROOM_CORS_ALLOWED_ORIGINS": raw})
    assert settings.cors_allowed_origins == expected


def test_from_environ_parses_strings():
    environ = {"PRROOM_MAX_MESSAGE_LENGTH": " 10 ", "PRROOM_TYPING_TIMEOUT": "0.5",
               "PRROOM_CORS_ALLOWED_ORIGINS": "a, b", "PRROOM_URL_PREFIX": "/chat",
               "PRROOM_ASYNC_MODE": "threading", "PATH": "/bin", "PRROOM_UNKNOWN": "x"}
    assert from_environ(environ) == {
        "PRROOM_MAX_MESSAGE_LENGTH": 10, "PRROOM_TYPING_TIMEOUT": 0.5,
        "PRROOM_CORS_ALLOWED_ORIGINS": ("a", "b"), "PRROOM_URL_PREFIX": "/chat",
        "PRROOM_ASYNC_MODE": "threading"}


def test_from_environ_only_returns_present_keys():
    assert from_environ({}) == {}
    assert from_environ({"HOME": "/root"}) == {}


def test_from_environ_empty_origins_means_same_origin():
    parsed = from_environ({"PRROOM_CORS_ALLOWED_ORIGINS": ""})
    assert parsed == {"PRROOM_CORS_ALLOWED_ORIGINS": None}
    assert Settings.from_mapping(parsed).cors_allowed_origins is None


def test_from_environ_result_feeds_from_mapping():
    parsed = from_environ({"PRROOM_MAX_USERNAME_LENGTH": "32", "PRROOM_PING_INTERVAL": "5"})
    settings = Settings.from_mapping(parsed)
    assert (settings.max_username_length, settings.ping_interval) == (32, 5.0)


@pytest.mark.parametrize("environ, key", [
    ({"PRROOM_MAX_FRAME_BYTES": "64k"}, "PRROOM_MAX_FRAME_BYTES"),
    ({"PRROOM_ASYNC_MODE": "eventlet"}, "PRROOM_ASYNC_MODE"),
    ({"PRROOM_PING_INTERVAL": ""}, "PRROOM_PING_INTERVAL"),
])
def test_from_environ_bad_value(environ, key):
    with pytest.raises(ConfigError, match=f"^{key}="):
        from_environ(environ)


def test_from_environ_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("PRROOM_MAX_MESSAGE_LENGTH", "123")
    assert from_environ()["PRROOM_MAX_MESSAGE_LENGTH"] == 123


# -- regressions: defects found earlier, now fixed ------------------------------------

@pytest.mark.parametrize("key", ["PRROOM_TYPING_TIMEOUT", "PRROOM_PING_INTERVAL",
                                 "PRROOM_PING_TIMEOUT"])
def test_nan_is_refused(key):
    with pytest.raises(ConfigError):
        Settings.from_mapping({key: "nan"})


def test_non_integral_float_is_refused_for_integer_setting():
    with pytest.raises(ConfigError):
        Settings.from_mapping({"PRROOM_MAX_MESSAGE_LENGTH": 1.9})


def test_what_check_config_marks_as_set_in_the_environment():
    from prroom.core.config import set_in_environ
    assert set_in_environ({"PORT": "9000", "PRROOM_CHANNEL": "x", "HOME": "/"}) == (
        "PRROOM_PORT", "PRROOM_CHANNEL")


def test_gunicorn_settings_prroom_overrides_are_named():
    from prroom.core.config import ignored_environ
    assert ignored_environ({"WEB_CONCURRENCY": "4"}) == {
        "WEB_CONCURRENCY=4": "prroom runs one worker per port"}
    assert ignored_environ({"WEB_CONCURRENCY": "1"}) == {}  # what it runs anyway


@pytest.mark.parametrize("url", ["redis+cluster://127.0.0.1:7000",
                                 "redis+cluster://a:7000,b:7001/",
                                 "redis+cluster://user:secret@a:7000,b:7001"])
def test_a_redis_cluster_url_is_accepted(url):
    assert Settings.from_mapping({"PRROOM_MESSAGE_QUEUE": url}).message_queue == url


@pytest.mark.parametrize("url", ["redis+cluster://", "redis+cluster://a", "redis+cluster://a:1/0",
                                 "redis+cluster://a:1,b"])
def test_a_redis_cluster_url_needs_host_port_pairs_and_no_database(url):
    assert "redis+cluster://host:port,..." in config_error({"PRROOM_MESSAGE_QUEUE": url})


def test_on_a_redis_cluster_a_deployment_lives_in_one_hash_slot():
    from redis.crc import key_slot

    from prroom.cluster.urls import keyspace

    url = "redis+cluster://a:7000,b:7001"
    space = keyspace(url, "team")
    names = [f"prroom:{space}", f"prroom:{space}:pr:1", f"prroom:{space}:pr:99999",
             f"prroom:{space}:users:1", f"prroom:{space}:recovery:seq"]
    assert len({key_slot(name.encode()) for name in names}) == 1
    # elsewhere the names stay as they were (stock emitters publish on prroom:<name>)
    assert keyspace("redis://a:6379/0", "team") == "team"


def test_post_tokens_are_bound_to_a_bot_and_optionally_to_pull_requests():
    from prroom.core.config import PostToken
    settings = Settings.from_mapping({"PRROOM_POST_TOKENS": "a-token-of-20-chars-x=ci-bot:12+15, "
                                                            "b-token-of-20-chars-y=deploy bot"})
    assert settings.post_tokens == (
        PostToken("a-token-of-20-chars-x", "ci-bot", frozenset({12, 15})),
        PostToken("b-token-of-20-chars-y", "deploy bot", None))


@pytest.mark.parametrize("raw,expected", [
    ("a-bare-token-of-24-chars", "has no bot name, so it could post as anyone: write "
                                 "TOKEN=BOTNAME or TOKEN=BOTNAME:PR+PR"),
    ("short=ci-bot", "expected a token of at least 16 characters"),
    ("a-token-of-20-chars-x=ci-bot:twelve", "expected pull request ids"),
    ("a-token-of-20-chars-x=ci-bot:0", "expected pull request ids"),
    ("a-token-of-20-chars-x=ci\x01bot", "must be a username"),
    ("a-token-of-20-chars-x=a,a-token-of-20-chars-x=b", "a token is listed twice"),
])
def test_a_bad_post_token_entry_is_refused_in_one_line_that_never_shows_a_token(raw, expected):
    with pytest.raises(ConfigError) as info:
        Settings.from_mapping({"PRROOM_POST_TOKENS": raw})
    message = str(info.value)
    assert expected in message and "\n" not in message
    assert "a-token-of-20" not in message and "a-bare-token" not in message


def test_a_short_admin_token_is_refused_without_showing_it():
    with pytest.raises(ConfigError) as info:
        Settings.from_mapping({"PRROOM_ADMIN_TOKEN": "hunter2hunter2"})
    assert "at least 32 characters" in str(info.value) and "hunter2" not in str(info.value)
    assert Settings.from_mapping({"PRROOM_ADMIN_TOKEN": "x" * 32}).admin_token == "x" * 32


def test_any_origin_with_cookie_based_auth_is_refused():
    message = config_error({"PRROOM_CORS_ALLOWED_ORIGINS": "*", "PRROOM_AUTH_MODE": "custom",
                            "PRROOM_AUTHENTICATE": lambda auth, request: "alice"})
    assert message == ("PRROOM_CORS_ALLOWED_ORIGINS='*' with PRROOM_AUTH_MODE='custom' "
                       "(cookie-based): expected the allowed origins listed instead")
    # a token travels in the auth payload, not in a cookie: any origin is fine then
    assert Settings.from_mapping({"PRROOM_CORS_ALLOWED_ORIGINS": "*",
                                  "PRROOM_AUTH_MODE": "token"}).cors_allowed_origins == ("*",)


@pytest.mark.parametrize("url,shown", [
    ("redis://:pw@h:6379/0", "redis://:****@h:6379/0"),
    ("redis://user:p@ss@h:1/0", "redis://user:****@h:1/0"),
    ("redis+sentinel://u:pw@a:1,b:2/0/svc", "redis+sentinel://u:****@a:1,b:2/0/svc"),
    ("redis://h:1/0?db=1&password=pw", "redis://h:1/0?db=1&password=****"),
    ("redis://h:1/0", "redis://h:1/0"),
])
def test_a_queue_url_is_shown_without_its_password(url, shown):
    setting = SETTINGS_BY_KEY["PRROOM_MESSAGE_QUEUE"]
    assert setting.shown(url) == shown
    assert SETTINGS_BY_KEY["PRROOM_SECRET_KEY"].shown("k") == "********"
    message = config_error({"PRROOM_MESSAGE_QUEUE": url.replace("redis", "http", 1)})
    assert "pw" not in message.replace("password", "")
