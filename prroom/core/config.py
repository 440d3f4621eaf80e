"""Every ``PRROOM_*`` setting in one place: default, type, valid range, description.

Flask apps set these keys in ``app.config``; the standalone app (:func:`prroom.create_app`,
``wsgi.py``, ``flask --app prroom run``) also reads them from environment variables of the
same name.  Precedence, highest first: ``create_app(config=...)`` / ``app.config`` set by the
host app, then the environment (standalone app only), then the defaults below.

A bad value raises :class:`ConfigError` at start-up with one line naming the key and what is
expected, never a traceback deep inside a request.
"""
from __future__ import annotations

import ipaddress
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, Mapping, NamedTuple, Optional, Tuple


class ConfigError(ValueError):
    """A ``PRROOM_*`` setting has a value prroom cannot use."""


def _parse_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError("a boolean is not an integer")
    if isinstance(raw, float) and not raw.is_integer():
        raise ValueError("not a whole number")
    if isinstance(raw, str):
        raw = raw.strip()
    return int(raw)


def _parse_float(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError("a boolean is not a number")
    value = float(raw)
    if not math.isfinite(value):  # NaN would pass every range check
        raise ValueError("not a finite number")
    return value


def _parse_str(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError("expected a string")
    return raw


def _parse_names(raw: Any) -> Optional[Tuple[str, ...]]:
    """Comma-separated names, parsed as origins are (:meth:`Setting.expected` differs)."""
    return _parse_origins(raw)


def _parse_origins(raw: Any) -> Optional[Tuple[str, ...]]:
    """``""``/None: same origin only; ``"*"``: any origin; else a comma-separated list."""
    if raw is None:
        return None
    if isinstance(raw, str):
        items = [part.strip() for part in raw.split(",") if part.strip()]
    else:
        items = [str(part).strip() for part in raw]
    if not items:
        return None
    return tuple(items)


class PostToken(NamedTuple):
    """One ``PRROOM_POST_TOKENS`` entry: who posts with the token, and where."""

    token: str
    #: the name its messages carry; "" for an entry written without one (refused at start)
    bot: str
    #: None: any pull request; else only these ids
    pull_requests: Optional[FrozenSet[int]] = None


#: The shortest bearer secret accepted (posting, admin): a random one of this length from
#: ``secrets.token_urlsafe`` holds far more than enough entropy, a word or a name does not.
MIN_POST_TOKEN = 16
MIN_ADMIN_TOKEN = 32
_BOT_NAME = re.compile(r"^[^\s\x00-\x1f\x7f-\x9f=:+,](?:[^\x00-\x1f\x7f-\x9f=:+,]*"
                       r"[^\s\x00-\x1f\x7f-\x9f=:+,])?$")


def _parse_post_tokens(raw: Any) -> Optional[Tuple[PostToken, ...]]:
    """``TOKEN=BOTNAME`` or ``TOKEN=BOTNAME:PR+PR`` entries, comma-separated; checked
    (with messages that never echo a token) by :func:`_check_post_tokens`."""
    if raw is None:
        return None
    parts = raw.split(",") if isinstance(raw, str) else list(raw)
    entries = []
    for part in parts:
        if isinstance(part, PostToken):  # parsed already (from_environ, then from_mapping)
            entries.append(part)
            continue
        part = str(part).strip()
        if not part:
            continue
        token, _, binding = part.partition("=")
        bot, colon, scope = binding.partition(":")
        pull_requests: Optional[FrozenSet[int]] = None
        if colon:  # an unreadable list stays empty, refused by _check_post_tokens
            try:
                pull_requests = frozenset(_parse_int(pr) for pr in scope.split("+"))
            except ValueError:
                pull_requests = frozenset()
            if pull_requests and min(pull_requests) < 1:
                pull_requests = frozenset()
        entries.append(PostToken(token.strip(), bot.strip(), pull_requests))
    return tuple(entries) or None


def _check_post_tokens(values: dict) -> None:
    entries = values["post_tokens"] or ()
    for number, entry in enumerate(entries, 1):
        where = f"PRROOM_POST_TOKENS: entry {number} of {len(entries)}"
        if not entry.bot:
            raise ConfigError(f"{where} has no bot name, so it could post as anyone: write "
                              "TOKEN=BOTNAME or TOKEN=BOTNAME:PR+PR (e.g. <token>=ci-bot:12+15)")
        if entry.pull_requests is not None and not entry.pull_requests:
            raise ConfigError(f"{where}: expected pull request ids (positive integers) "
                              "joined by + after the bot name, e.g. <token>=ci-bot:12+15")
        if len(entry.token) < MIN_POST_TOKEN:
            raise ConfigError(f"{where}: expected a token of at least {MIN_POST_TOKEN} "
                              "characters (python -c 'import secrets; "
                              "print(secrets.token_urlsafe(24))')")
        if not _BOT_NAME.match(entry.bot) or len(entry.bot) > values["max_username_length"]:
            raise ConfigError(f"{where}: the bot name {entry.bot!r} must be a username of at "
                              f"most {values['max_username_length']} characters, without "
                              "control characters, outer spaces or any of = : + ,")
    tokens = [entry.token for entry in entries]
    if len(set(tokens)) != len(tokens):
        raise ConfigError("PRROOM_POST_TOKENS: a token is listed twice; give each bot its own")
    admin = values["admin_token"]
    if admin is not None and len(admin) < MIN_ADMIN_TOKEN:
        raise ConfigError(f"PRROOM_ADMIN_TOKEN: expected at least {MIN_ADMIN_TOKEN} characters "
                          "(python -c 'import secrets; print(secrets.token_urlsafe(32))'), "
                          "or unset to turn the admin endpoint off")


def _parse_networks(raw: Any) -> Tuple[str, ...]:
    """Comma-separated IP addresses or CIDR networks; empty = none."""
    items = _parse_origins(raw) or ()
    for item in items:
        ipaddress.ip_network(item, strict=False)  # ValueError: refused at start
    return items


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


_FRAME_SOURCE = re.compile(r"(https?|wss?)://(\*\.)?[A-Za-z0-9.-]+(:(\d{1,5}|\*))?"
                           r"|https?:")


def _parse_frame_ancestors(raw: Any) -> Tuple[str, ...]:
    """CSP ``frame-ancestors`` sources: ``'self'``, ``'none'`` (alone) or origins.

    Each source is checked whole, so nothing else (``;``, another directive) can be
    smuggled into the header.
    """
    if isinstance(raw, (list, tuple)):
        raw = " ".join(str(part) for part in raw)
    items = [part for part in re.split(r"[\s,]+", _parse_str(raw)) if part]
    sources = []
    for item in items:
        keyword = item.strip("'").lower()
        if keyword in ("self", "none"):
            sources.append(f"'{keyword}'")
        elif _FRAME_SOURCE.fullmatch(item):
            sources.append(item.rstrip("/"))
        else:
            raise ValueError(f"not a frame-ancestors source: {item}")
    if not sources or ("'none'" in sources and len(sources) > 1):
        raise ValueError("'none' stands alone")
    return tuple(sources)


_QUEUE_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "redis+cluster://",
                  "valkey://", "valkeys://")


_URL_PASSWORD = re.compile(r"(://[^:/@,]*:)[^/]*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``url`` with its password (``user:password@``, ``?password=``) as ``****``."""
    return _QUERY_PASSWORD.sub(r"\1****", _URL_PASSWORD.sub(r"\1****@", url))


def _parse_queue_url(raw: Any) -> str:
    """Empty, or a Redis/Valkey URL python-socketio's Redis manager understands."""
    value = _parse_str(raw).strip()
    if value and not value.startswith(_QUEUE_SCHEMES):
        raise ValueError("expected a redis:// URL")
    if value.startswith("redis+sentinel://") and \
            len([part for part in value.split("://", 1)[1].split("/")[1:] if part]) < 2:
        raise ValueError("expected redis+sentinel://host:port[,host:port...]/db/service_name")
    if value.startswith("redis+cluster://") and not re.fullmatch(
            r"redis\+cluster://([^@/]*@)?[^:,/]+:\d+(,[^:,/]+:\d+)*/?", value):
        raise ValueError("expected redis+cluster://host:port[,host:port...]")
    return value


def _parse_callable(raw: Any) -> Optional[Callable]:
    """A callable, or an import path ``"package.module:name"`` naming one."""
    if raw is None or callable(raw):
        return raw
    if not isinstance(raw, str) or ":" not in raw:
        raise ValueError("expected a callable or 'module:name'")
    module_name, _, attribute = raw.partition(":")
    import importlib

    try:
        value = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {raw}: {exc}") from None
    if not callable(value):
        raise ValueError(f"{raw} is not callable")
    return value


# The official CDN build of socket.io-client, pinned, with its Subresource Integrity hash
# (sha384 of dist/socket.io.min.js in the npm package socket.io-client@4.8.1, the same file
# the CDN serves).  Change both together.
DEFAULT_SOCKETIO_CLIENT_URL = "https://cdn.socket.io/4.8.1/socket.io.min.js"
DEFAULT_SOCKETIO_CLIENT_INTEGRITY = (
    "sha384-mkQ3/7FUtcGyoppY6bz/PORYoGqOl7/aSUMn2ymDOJcapfS6PHqxhRTMh1RR0Q6+")
_SRI_HASH = re.compile(r"^sha(256|384|512)-[A-Za-z0-9+/]+={0,2}$")


@dataclass(frozen=True)
class Setting:
    """One configuration key: how to parse it, its default and the range it must fall in."""

    key: str
    default: Any
    parse: Callable[[Any], Any]
    description: str
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    choices: Optional[Tuple[str, ...]] = None
    secret: bool = False  # masked wherever settings are shown
    flag: bool = False  # also a ``prroom serve --<name>`` option

    @property
    def name(self) -> str:
        """The key without its prefix, lower-cased: the :class:`Settings` field and CLI flag."""
        return self.key[len("PRROOM_"):].lower()

    def coerce(self, raw: Any) -> Any:
        """Return ``raw`` parsed and range-checked, or raise :class:`ConfigError`."""
        try:
            value = self.parse(raw)
        except (TypeError, ValueError):
            raise self._refusal(raw) from None
        if self.choices is not None and value not in self.choices:
            raise self._refusal(raw)
        if self.minimum is not None and value < self.minimum:
            raise self._refusal(raw)
        if self.maximum is not None and value > self.maximum:
            raise self._refusal(raw)
        return value

    def _refusal(self, raw: Any) -> ConfigError:
        shown = self.shown(raw) if isinstance(raw, str) and self.masks else raw
        return ConfigError(f"{self.key}={shown!r}: expected {self.expected()}")

    @property
    def masks(self) -> bool:
        """Whether a value of this setting is never shown as it is (a secret, a URL's
        password)."""
        return self.secret or self.parse is _parse_queue_url

    def shown(self, value: Any) -> Any:
        """``value`` as it may be printed: a secret as ``********``, a URL's password masked."""
        if not value:
            return value
        if self.secret:
            return "********"
        if self.parse is _parse_queue_url and isinstance(value, str):
            return mask_url(value)
        return value

    def expected(self) -> str:
        """Human description of the valid values, used in error messages and the docs."""
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        kind: Dict[Callable[[Any], Any], str] = {_parse_int: "an integer", _parse_float: "a number",
                _parse_str: "a string", _parse_origins: "a comma-separated list of origins",
                _parse_frame_ancestors: "'self', 'none' or origins (https://host[:port])",
                _parse_callable: "a callable or 'module:name'",
                _parse_names: "comma-separated names",
                _parse_post_tokens: "comma-separated TOKEN=BOTNAME or TOKEN=BOTNAME:PR+PR entries",
                _parse_networks: "comma-separated IP addresses or CIDR networks",
                _parse_queue_url: "empty or a redis://host:port/db, redis+sentinel://host:"
                                  "port,.../db/service or redis+cluster://host:port,... URL"}
        text = kind.get(self.parse, "a value")
        if self.minimum is not None and self.maximum is not None:
            text += f" from {_number(self.minimum)} to {_number(self.maximum)}"
        elif self.minimum is not None:
            text += f" of at least {_number(self.minimum)}"
        return text


SETTINGS: Tuple[Setting, ...] = (
    Setting("PRROOM_URL_PREFIX", "", _parse_str,
            "URL prefix of the blueprint (health check and later pages), e.g. /chat"),
    Setting("PRROOM_SOCKETIO_PATH", "socket.io", _parse_str,
            "Path the Socket.IO endpoint is served at (used when prroom creates the SocketIO)"),
    Setting("PRROOM_MAX_MESSAGE_LENGTH", 4000, _parse_int,
            "Longest chat message accepted, in characters", 1, 1_000_000),
    Setting("PRROOM_MAX_USERNAME_LENGTH", 64, _parse_int,
            "Longest username accepted, in characters", 1, 1024),
    Setting("PRROOM_TYPING_TIMEOUT", 5.0, _parse_float,
            "Seconds after the last `typing` before the others get `stop-typing`", 0.05, 3600),
    Setting("PRROOM_MAX_FRAME_BYTES", 65536, _parse_int,
            "Largest Socket.IO frame / HTTP body accepted; a larger frame closes that "
            "connection", 1024, 100_000_000),
    Setting("PRROOM_PING_INTERVAL", 25.0, _parse_float,
            "Seconds between Engine.IO pings", 1, 3600),
    Setting("PRROOM_PING_TIMEOUT", 20.0, _parse_float,
            "Seconds to wait for a pong before a client is considered gone", 1, 3600),
    Setting("PRROOM_CORS_ALLOWED_ORIGINS", None, _parse_origins,
            "Browser origins allowed to connect: empty = same origin only, `*` = any, "
            "or a comma-separated list"),
    Setting("PRROOM_EMBED_FRAME_ANCESTORS", ("'self'",), _parse_frame_ancestors,
            "Pages that may frame the embed view (CSP frame-ancestors): `'self'`, `'none'` "
            "or origins such as https://review.example.com, space- or comma-separated"),
    Setting("PRROOM_AUTH_MODE", "none", _parse_str,
            "How connections are identified: `none` (name given at join; development only), "
            "`token` (signed token in the Socket.IO auth payload) or `custom` "
            "(PRROOM_AUTHENTICATE decides)", choices=("none", "token", "custom")),
    Setting("PRROOM_SECRET_KEY", None, _parse_str,
            "Key that signs tokens; empty = the app's SECRET_KEY", secret=True),
    Setting("PRROOM_TOKEN_MAX_AGE", 900.0, _parse_float,
            "Seconds a token stays valid for connecting", 1, 30 * 86400),
    Setting("PRROOM_AUTHENTICATE", None, _parse_callable,
            "`custom` mode: `authenticate(auth, request)` returning a username or refusing "
            "(None); a callable or 'module:name'"),
    Setting("PRROOM_CAN_JOIN", None, _parse_callable,
            "`can_join(identity, pull_request_id)` -> bool, checked at join on top of a "
            "token's scope; a callable or 'module:name'"),
    Setting("PRROOM_MESSAGE_RATE", 5.0, _parse_float,
            "Messages per second a socket may send, sustained", 0.01, 1_000_000),
    Setting("PRROOM_MESSAGE_BURST", 20, _parse_int,
            "Messages a socket may send at once before the rate applies", 1, 1_000_000),
    Setting("PRROOM_TYPING_RATE", 5.0, _parse_float,
            "typing/stop-typing events per second per socket", 0.01, 1_000_000),
    Setting("PRROOM_TYPING_BURST", 20, _parse_int,
            "typing/stop-typing burst per socket", 1, 1_000_000),
    Setting("PRROOM_ROOM_RATE", 2.0, _parse_float,
            "join/leave events per second per socket", 0.01, 1_000_000),
    Setting("PRROOM_ROOM_BURST", 30, _parse_int,
            "join/leave burst per socket", 1, 1_000_000),
    Setting("PRROOM_RATE_LIMIT_DISCONNECT_AFTER", 50, _parse_int,
            "Rate-limited events after which the socket is disconnected (counted until it "
            "goes 60 s without a refusal; accepted events do not reset the count)", 1,
            1_000_000),
    Setting("PRROOM_MAX_ROOMS_PER_SOCKET", 50, _parse_int,
            "Rooms one connection may be in at once", 1, 1_000_000),
    Setting("PRROOM_MAX_CONNECTIONS_PER_IDENTITY", 20, _parse_int,
            "Connections of one authenticated identity at once, cluster-wide", 1, 1_000_000),
    Setting("PRROOM_MAX_QUEUED_PACKETS", 2000, _parse_int,
            "Packets waiting to be written to one client before it is dropped as too slow",
            10, 10_000_000),
    Setting("PRROOM_MAX_SESSIONS_PER_ADDRESS", 256, _parse_int,
            "Engine.IO sessions open at once from one client address (behind "
            "PRROOM_TRUSTED_PROXIES: the forwarded address); more handshakes are answered "
            "401; 0 = no cap", 0, 1_000_000),
    Setting("PRROOM_TRUSTED_PROXIES", ("127.0.0.1", "::1"), _parse_networks,
            "Proxies whose X-Forwarded-For names the client (addresses or CIDR networks, "
            "comma-separated); empty = none: every peer is the client"),
    Setting("PRROOM_MAX_QUEUED_BYTES", 4_194_304, _parse_int,
            "Bytes waiting to be written to one WebSocket client (beyond what the kernel "
            "took) before it is dropped as too slow", 65536, 1_000_000_000),
    Setting("PRROOM_MESSAGE_QUEUE", "", _parse_queue_url,
            "Message queue URL (redis://host:6379/0; redis+sentinel://... and "
            "redis+cluster://host:port,... too) joining several prroom processes into one "
            "service; empty = one process, in memory", flag=True),
    Setting("PRROOM_CHANNEL", "prroom", _parse_str,
            "Name under which this deployment's traffic and presence live in the queue, so "
            "two deployments can share one Redis"),
    Setting("PRROOM_QUEUE_PUBSUB", "auto", _parse_str,
            "Clustered mode: how room channels are carried: `sharded` (Redis 7's SSUBSCRIBE/"
            "SPUBLISH, as Redis Cluster needs), `plain` (SUBSCRIBE/PUBLISH), or `auto` "
            "(sharded when the server has it); every process of a deployment must agree",
            choices=("auto", "sharded", "plain")),
    Setting("PRROOM_PRESENCE_TTL", 15.0, _parse_float,
            "Clustered mode: seconds after which a process that stopped heartbeating (killed, "
            "host lost) is reaped and its users announced as left", 1, 3600),
    Setting("PRROOM_POST_TOKENS", None, _parse_post_tokens,
            "Bearer tokens allowed to POST messages over HTTP, each bound to the bot name its "
            "messages carry and optionally to some pull requests: comma-separated "
            "`TOKEN=BOTNAME` or `TOKEN=BOTNAME:PR+PR` entries, tokens of at least 16 "
            "characters; empty = the endpoint is off", secret=True),
    Setting("PRROOM_POST_RATE", 10.0, _parse_float,
            "HTTP posts per second per token, sustained", 0.01, 1_000_000),
    Setting("PRROOM_POST_BURST", 50, _parse_int, "HTTP posts per token at once", 1,
            1_000_000),
    Setting("PRROOM_ADMIN_TOKEN", None, _parse_str,
            "Bearer token of the admin endpoint (`POST /admin/disconnect-identity`), at "
            "least 32 characters; empty = the endpoint is off", secret=True),
    Setting("PRROOM_METRICS_PATH", "", _parse_str,
            "Path of the Prometheus metrics endpoint under the URL prefix (e.g. /metrics); "
            "empty = off"),
    Setting("PRROOM_METRICS_TOKEN", None, _parse_str,
            "Bearer token required to read the metrics; empty = none required", secret=True),
    Setting("PRROOM_ASYNC_MODE", "auto", _parse_str,
            "Concurrency model when prroom creates the SocketIO: `auto` picks gevent when gevent "
            "has monkey-patched the process and threading otherwise (flask run)",
            choices=("auto", "gevent", "threading")),
    Setting("PRROOM_BLOCKING_THRESHOLD", 100.0, _parse_float,
            "Under gevent: milliseconds the event loop may be held before prroom logs the "
            "stack of the code that held it and counts it in the metrics; 0 = off",
            0, 600_000),
    Setting("PRROOM_WEBSOCKET_WRITES", "direct", _parse_str,
            "How WebSocket packets go out under gevent: `direct` (written by whoever sends "
            "them, pings from a timer: no writer or ping greenlet per connection; "
            "prroom/transport/writes.py) or `engineio` (python-engineio's own "
            "writer greenlet)",
            choices=("direct", "engineio")),
    Setting("PRROOM_EVENT_PATH", "direct", _parse_str,
            "How prroom's own events get from a WebSocket frame to their handler under "
            "gevent: `direct` (decoded once, straight to python-socketio's event entry point; "
            "prroom/transport/event_path.py) or `library` (through python-engineio's and "
            "python-socketio's packet layers, as every other packet is)",
            choices=("direct", "library")),
    # The chat page (prroom/server/web.py) loads the official socket.io-client build from here.
    Setting("PRROOM_SOCKETIO_CLIENT_URL", DEFAULT_SOCKETIO_CLIENT_URL, _parse_str,
            "Where the chat page loads socket.io-client from: an http(s) URL or a path "
            "(ignored when PRROOM_SOCKETIO_CLIENT_FILE is set)"),
    Setting("PRROOM_SOCKETIO_CLIENT_INTEGRITY", DEFAULT_SOCKETIO_CLIENT_INTEGRITY, _parse_str,
            "Subresource Integrity hash of the file at PRROOM_SOCKETIO_CLIENT_URL; empty = none"),
    Setting("PRROOM_SOCKETIO_CLIENT_FILE", "", _parse_str,
            "A local socket.io-client build (socket.io.min.js) that the blueprint serves and "
            "the chat page loads instead of PRROOM_SOCKETIO_CLIENT_URL; empty = off"),
    Setting("PRROOM_MAX_ATTACHMENTS", 10, _parse_int,
            "Binary attachments one Socket.IO packet may announce; more closes that "
            "connection (socket.io's maxAttachments)", 1, 1000),
    Setting("PRROOM_CONNECT_TIMEOUT", 45.0, _parse_float,
            "Seconds an Engine.IO session may stay without connecting to a Socket.IO "
            "namespace (where authentication happens) before it is closed", 1, 3600),
    Setting("PRROOM_RECOVERY_WINDOW", 0.0, _parse_float,
            "Seconds a lost connection's session (rooms, identity, missed room messages) is "
            "kept for socket.io-client's connection state recovery (in Redis when "
            "PRROOM_MESSAGE_QUEUE is set, for every process); 0 = off", 0, 3600),
    Setting("PRROOM_RECOVERY_BUFFER", 1000, _parse_int,
            "Room broadcasts kept per room for recovery; a session that missed more gets a "
            "fresh session", 1, 1_000_000),
    Setting("PRROOM_RECOVERY_SESSIONS", 100_000, _parse_int,
            "With recovery on: lost sessions one process keeps at most (the oldest goes "
            "first), the bound under a flood of disconnects", 1, 10_000_000),
    Setting("PRROOM_PRESENCE_GRACE", 5.0, _parse_float,
            "With recovery on: seconds after a lost connection before its user is announced "
            "as left (at most PRROOM_RECOVERY_WINDOW)", 0, 3600),
    Setting("PRROOM_ACCEPT_MISSING", None, _parse_names,
            "Protection seams (names in the docs' library seams table) the server may start "
            "without when the installed library lacks what they need; empty = refuse to start"),
)

#: How the server process runs (read by prroom/gunicorn_config.py and `prroom serve`, from
#: the environment only: they exist before any Flask app does).
SERVER_SETTINGS: Tuple[Setting, ...] = (
    Setting("PRROOM_HOST", "127.0.0.1", _parse_str, "Address to listen on", flag=True),
    Setting("PRROOM_PORT", 8000, _parse_int, "Port to listen on (PORT works too)", 0, 65535,
            flag=True),
    Setting("PRROOM_BIND", "", _parse_str,
            "A full gunicorn bind (0.0.0.0:80, unix:/run/prroom.sock); overrides host/port",
            flag=True),
    Setting("PRROOM_WORKER_CONNECTIONS", 10000, _parse_int,
            "Simultaneous connections the worker accepts", 1, 1_000_000, flag=True),
    Setting("PRROOM_WORKER_TIMEOUT", 30, _parse_int, "gunicorn's worker timeout, seconds", 1,
            86400),
    Setting("PRROOM_GRACEFUL_TIMEOUT", 10, _parse_int,
            "Seconds to finish after SIGTERM before connections are cut", 1, 3600),
    Setting("PRROOM_LOG_LEVEL", "info", _parse_str, "Log level",
            choices=("debug", "info", "warning", "error", "critical"), flag=True),
    Setting("PRROOM_LOG_FORMAT", "text", _parse_str, "Log line format",
            choices=("text", "json"), flag=True),
    Setting("PRROOM_ACCESS_LOG", "-", _parse_str,
            "Access log file, - for stdout, empty for none"),
    Setting("PRROOM_CONTROL_SOCKET", "", _parse_str,
            "gunicorn 26+'s control socket path; empty = off (instances on one host would "
            "collide on the default path)"),
    Setting("PRROOM_HEADER_TIMEOUT", 10.0, _parse_float,
            "Seconds a client has to send a request line and headers, from when it connects "
            "(or, on a kept-alive connection, from its first byte); then it is cut", 1, 3600),
    Setting("PRROOM_BODY_TIMEOUT", 10.0, _parse_float,
            "Seconds a client has to send a request's body (up to PRROOM_MAX_FRAME_BYTES), "
            "from the end of its headers; then it is answered 408 and cut, unseen by the "
            "application", 1, 3600),
    Setting("PRROOM_MAX_HEADER_BYTES", 16384, _parse_int,
            "Most bytes of request headers, all lines together; more is answered 431", 1024,
            1_048_576),
)

SETTINGS_BY_KEY = {setting.key: setting for setting in SETTINGS}
DEFAULTS = {setting.key: setting.default for setting in SETTINGS}


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
    authenticate: Optional[Callable]
    can_join: Optional[Callable]
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
        _check_socketio_client(values)
        _check_post_tokens(values)
        return cls(**values)


def check_origins(origins: Optional[Tuple[str, ...]], auth_mode: str) -> None:
    """Refuse any origin (``*``) with cookie-based (``custom``) authentication.

    A browser sends its cookies on a WebSocket to any site, whatever page opened it: with
    ``*`` every page on the web could connect as its visitors.
    """
    if origins == ("*",) and auth_mode == "custom":
        raise ConfigError("PRROOM_CORS_ALLOWED_ORIGINS='*' with PRROOM_AUTH_MODE='custom' "
                          "(cookie-based): expected the allowed origins listed instead")


def _check_socketio_client(values: dict) -> None:
    """Validate the chat page's socket.io-client settings; make the local file's path absolute."""
    url = values["socketio_client_url"].strip()
    if not url.startswith(("https://", "http://", "//", "/")):
        raise ConfigError(f"PRROOM_SOCKETIO_CLIENT_URL={url!r}: expected an http(s) URL or a "
                          "path starting with /")
    integrity = values["socketio_client_integrity"].strip()
    if integrity and not all(_SRI_HASH.match(part) for part in integrity.split()):
        raise ConfigError(f"PRROOM_SOCKETIO_CLIENT_INTEGRITY={integrity!r}: expected an SRI "
                          "hash such as sha384-<base64> (or empty for none)")
    path = values["socketio_client_file"].strip()
    if path:
        if not os.path.isfile(path):
            raise ConfigError(f"PRROOM_SOCKETIO_CLIENT_FILE={path!r}: expected an existing "
                              "file (socket.io-client's dist/socket.io.min.js)")
        path = os.path.abspath(path)
    values.update(socketio_client_url=url, socketio_client_integrity=integrity,
                  socketio_client_file=path)


#: Other names a setting is read under when its own key is unset (platforms set ``PORT``).
ALIASES = {"PRROOM_PORT": "PORT"}


def _raw(environ: Mapping[str, str], key: str) -> Optional[str]:
    """``key``'s value in ``environ``, or its alias's, or None."""
    raw = environ.get(key)
    if raw is None and key in ALIASES:
        raw = environ.get(ALIASES[key])
    return raw


def server_settings(environ: Optional[Mapping[str, str]] = None) -> dict:
    """Every SERVER_SETTINGS key, lower-cased without the prefix: environment or default."""
    environ = os.environ if environ is None else environ
    values = {}
    for setting in SERVER_SETTINGS:
        raw = _raw(environ, setting.key)
        values[setting.name] = setting.default if raw is None else setting.coerce(raw)
    return values


def from_environ(environ: Optional[Mapping[str, str]] = None) -> dict:
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
