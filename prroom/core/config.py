"""Every ``PRROOM_*`` setting in one place: default, type, valid range, description.

Flask apps set these keys in ``app.config``; the standalone app (:func:`prroom.create_app`,
``wsgi.py``, ``flask --app prroom run``) also reads them from environment variables of the
same name.  Precedence, highest first: ``create_app(config=...)`` / ``app.config`` set by the
host app, then the environment (standalone app only), then the defaults below.

A bad value raises :class:`ConfigError` at start-up with one line naming the key and what is
expected, never a traceback deep inside a request.  The declarations are in
:mod:`prroom.core.declarations`, the parsers in :mod:`prroom.core.parsers`; this module is
the typed view (:class:`Settings`) and where the environment is read, and keeps every name
importable from here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from prroom.core.declarations import (
    DEFAULTS,
    SERVER_SETTINGS,
    SETTINGS,
    SETTINGS_BY_KEY,
    Setting,
)
from prroom.core.parsers import (
    DEFAULT_SOCKETIO_CLIENT_INTEGRITY,
    DEFAULT_SOCKETIO_CLIENT_URL,
    MIN_ADMIN_TOKEN,
    MIN_POST_TOKEN,
    ConfigError,
    PostToken,
    check_origins,
    check_post_tokens,
    check_socketio_client,
    mask_url,
)

__all__ = ["ConfigError", "PostToken", "Setting", "Settings", "SETTINGS", "SERVER_SETTINGS",
           "SETTINGS_BY_KEY", "DEFAULTS", "ALIASES", "DEFAULT_SOCKETIO_CLIENT_URL",
           "DEFAULT_SOCKETIO_CLIENT_INTEGRITY", "MIN_POST_TOKEN", "MIN_ADMIN_TOKEN",
           "IGNORED_GUNICORN_ENVIRON", "check_origins", "mask_url", "server_settings",
           "from_environ", "settings_from_environ", "set_in_environ", "ignored_environ"]


@dataclass(frozen=True)
class Settings:
    """The validated, typed view of the ``PRROOM_*`` keys that the rest of prroom reads.

    One field per entry of :data:`SETTINGS`, named :attr:`Setting.name`, and nothing else:
    defaults, ranges and descriptions live in the declaration only (checked at import).
    """

    url_prefix: str
    socketio_path: str
    max_message_length: int
    max_username_length: int
    typing_timeout: float
    max_frame_bytes: int
    ping_interval: float
    ping_timeout: float
    cors_allowed_origins: Optional[Tuple[str, ...]]
    embed_frame_ancestors: Tuple[str, ...]
    auth_mode: str
    secret_key: Optional[str]
    token_max_age: float
    authenticate: Optional[Callable[..., Any]]
    can_join: Optional[Callable[..., Any]]
    message_rate: float
    message_burst: int
    typing_rate: float
    typing_burst: int
    room_rate: float
    room_burst: int
    rate_limit_disconnect_after: int
    max_rooms_per_socket: int
    max_connections_per_identity: int
    max_queued_packets: int
    max_sessions_per_address: int
    trusted_proxies: Tuple[str, ...]
    max_queued_bytes: int
    message_queue: str
    channel: str
    queue_pubsub: str
    presence_ttl: float
    post_tokens: Optional[Tuple[PostToken, ...]]
    post_rate: float
    post_burst: int
    admin_token: Optional[str]
    metrics_path: str
    metrics_token: Optional[str]
    async_mode: str
    blocking_threshold: float
    websocket_writes: str
    event_path: str
    idle_connections: str
    socketio_client_url: str
    socketio_client_integrity: str
    socketio_client_file: str
    max_attachments: int
    connect_timeout: float
    recovery_window: float
    recovery_buffer: int
    recovery_sessions: int
    presence_grace: float
    accept_missing: Optional[Tuple[str, ...]]

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> "Settings":
        """Validate every key of ``config`` (missing keys take their default)."""
        values: Dict[str, Any] = {}
        for setting in SETTINGS:
            raw = config.get(setting.key, setting.default)
            value = setting.default if raw is None and setting.default is None \
                else setting.coerce(raw)
            values[setting.name] = value
        if values["url_prefix"] and not values["url_prefix"].startswith("/"):
            raise ConfigError(f"PRROOM_URL_PREFIX={values['url_prefix']!r}: expected a path "
                              "starting with / (or empty)")
        values["url_prefix"] = values["url_prefix"].rstrip("/")
        if values["metrics_path"] and not values["metrics_path"].startswith("/"):
            raise ConfigError(f"PRROOM_METRICS_PATH={values['metrics_path']!r}: expected a "
                              "path starting with / (or empty for off)")
        # A message at the length limit must fit in a frame: a JSON client may escape every
        # character as a surrogate pair (12 bytes), plus the packet's envelope.
        needed = values["max_message_length"] * 12 + 1024
        if values["max_frame_bytes"] < needed:
            raise ConfigError(
                f"PRROOM_MAX_FRAME_BYTES={values['max_frame_bytes']}: expected at least "
                f"{needed} so a message of PRROOM_MAX_MESSAGE_LENGTH="
                f"{values['max_message_length']} characters always fits")
        if values["auth_mode"] == "custom" and values["authenticate"] is None:
            raise ConfigError("PRROOM_AUTH_MODE='custom': expected PRROOM_AUTHENTICATE to be "
                              "set (or the @PRRoom.authenticator decorator)")
        check_origins(values["cors_allowed_origins"], values["auth_mode"])
        check_socketio_client(values)
        check_post_tokens(values)
        return cls(**values)


#: Other names a setting is read under when its own key is unset (platforms set ``PORT``).
ALIASES = {"PRROOM_PORT": "PORT"}


def _raw(environ: Mapping[str, str], key: str) -> Optional[str]:
    """``key``'s value in ``environ``, or its alias's, or None."""
    raw = environ.get(key)
    if raw is None and key in ALIASES:
        raw = environ.get(ALIASES[key])
    return raw


def server_settings(environ: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """Every SERVER_SETTINGS key, lower-cased without the prefix: environment or default."""
    environ = os.environ if environ is None else environ
    values = {}
    for setting in SERVER_SETTINGS:
        raw = _raw(environ, setting.key)
        values[setting.name] = setting.default if raw is None else setting.coerce(raw)
    return values


def from_environ(environ: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """Return the ``PRROOM_*`` settings present in ``environ`` (default ``os.environ``), parsed."""
    environ = os.environ if environ is None else environ
    return {key: SETTINGS_BY_KEY[key].coerce(environ[key])
            for key in SETTINGS_BY_KEY if key in environ}


def settings_from_environ(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """The app settings a process outside any Flask app runs with: environment, then defaults.

    What the ``prroom`` command and :func:`prroom.post_message` without an app use, so they
    apply the same limits (``PRROOM_MAX_MESSAGE_LENGTH``...) as the server they talk to.
    """
    return Settings.from_mapping({**DEFAULTS, **from_environ(environ)})


def set_in_environ(environ: Optional[Mapping[str, str]] = None) -> Tuple[str, ...]:
    """The declared keys (app and server settings) that ``environ`` sets, aliases counted
    (``PORT``): what ``prroom check-config`` marks as coming from the environment."""
    environ = os.environ if environ is None else environ
    return tuple(setting.key for setting in SERVER_SETTINGS + SETTINGS
                 if _raw(environ, setting.key) is not None)


#: gunicorn's own environment settings that prroom's server overrides, and why.
IGNORED_GUNICORN_ENVIRON = {
    "WEB_CONCURRENCY": "prroom runs one worker per port",
}


def ignored_environ(environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """``{"WEB_CONCURRENCY=4": why}`` for each gunicorn setting in ``environ`` that prroom's
    server ignores (a value of 1 is what it runs anyway, so it is not reported)."""
    environ = os.environ if environ is None else environ
    return {f"{key}={environ[key]}": why for key, why in IGNORED_GUNICORN_ENVIRON.items()
            if environ.get(key, "1") != "1"}


def _check_declarations() -> None:
    # Settings must mirror SETTINGS exactly: a key declared without a field (or the reverse)
    # would otherwise be silently ignored.
    fields = tuple(Settings.__dataclass_fields__)
    declared = tuple(setting.name for setting in SETTINGS)
    if fields != declared:
        raise RuntimeError(f"prroom.core.config: Settings fields {fields} do not match "
                           f"SETTINGS {declared}")


_check_declarations()
