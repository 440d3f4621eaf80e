"""Every ``PRROOM_*`` setting declared once: key, default, parser, description, range.

:data:`SETTINGS` are the app's (``app.config`` or the environment), :data:`SERVER_SETTINGS`
the server process's (environment only); the documentation's configuration reference,
``prroom check-config`` and the CLI's flags are all generated from these declarations.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

from prroom.core.parsers import (
    DEFAULT_SOCKETIO_CLIENT_INTEGRITY,
    DEFAULT_SOCKETIO_CLIENT_URL,
    ConfigError,
    format_number,
    mask_url,
    parse_callable,
    parse_float,
    parse_frame_ancestors,
    parse_int,
    parse_names,
    parse_networks,
    parse_origins,
    parse_post_tokens,
    parse_queue_url,
    parse_str,
)


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
        return self.secret or self.parse is parse_queue_url

    def shown(self, value: Any) -> Any:
        """``value`` as it may be printed: a secret as ``********``, a URL's password masked."""
        if not value:
            return value
        if self.secret:
            return "********"
        if self.parse is parse_queue_url and isinstance(value, str):
            return mask_url(value)
        return value

    def expected(self) -> str:
        """Human description of the valid values, used in error messages and the docs."""
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        kind: Dict[Callable[[Any], Any], str] = {parse_int: "an integer", parse_float: "a number",
                parse_str: "a string", parse_origins: "a comma-separated list of origins",
                parse_frame_ancestors: "'self', 'none' or origins (https://host[:port])",
                parse_callable: "a callable or 'module:name'",
                parse_names: "comma-separated names",
                parse_post_tokens: "comma-separated TOKEN=BOTNAME or TOKEN=BOTNAME:PR+PR entries",
                parse_networks: "comma-separated IP addresses or CIDR networks",
                parse_queue_url: "empty or a redis://host:port/db, redis+sentinel://host:"
                                  "port,.../db/service or redis+cluster://host:port,... URL"}
        text = kind.get(self.parse, "a value")
        if self.minimum is not None and self.maximum is not None:
            text += f" from {format_number(self.minimum)} to {format_number(self.maximum)}"
        elif self.minimum is not None:
            text += f" of at least {format_number(self.minimum)}"
        return text


SETTINGS: Tuple[Setting, ...] = (
    Setting("PRROOM_URL_PREFIX", "", parse_str,
            "URL prefix of the blueprint (health check and later pages), e.g. /chat"),
    Setting("PRROOM_SOCKETIO_PATH", "socket.io", parse_str,
            "Path the Socket.IO endpoint is served at (used when prroom creates the SocketIO)"),
    Setting("PRROOM_MAX_MESSAGE_LENGTH", 4000, parse_int,
            "Longest chat message accepted, in characters", 1, 1_000_000),
    Setting("PRROOM_MAX_USERNAME_LENGTH", 64, parse_int,
            "Longest username accepted, in characters", 1, 1024),
    Setting("PRROOM_TYPING_TIMEOUT", 5.0, parse_float,
            "Seconds after the last `typing` before the others get `stop-typing`", 0.05, 3600),
    Setting("PRROOM_MAX_FRAME_BYTES", 65536, parse_int,
            "Largest Socket.IO frame / HTTP body accepted; a larger frame closes that "
            "connection", 1024, 100_000_000),
    Setting("PRROOM_PING_INTERVAL", 25.0, parse_float,
            "Seconds between Engine.IO pings", 1, 3600),
    Setting("PRROOM_PING_TIMEOUT", 20.0, parse_float,
            "Seconds to wait for a pong before a client is considered gone", 1, 3600),
    Setting("PRROOM_CORS_ALLOWED_ORIGINS", None, parse_origins,
            "Browser origins allowed to connect: empty = same origin only, `*` = any, "
            "or a comma-separated list"),
    Setting("PRROOM_EMBED_FRAME_ANCESTORS", ("'self'",), parse_frame_ancestors,
            "Pages that may frame the embed view (CSP frame-ancestors): `'self'`, `'none'` "
            "or origins such as https://review.example.com, space- or comma-separated"),
    Setting("PRROOM_AUTH_MODE", "none", parse_str,
            "How connections are identified: `none` (name given at join; development only), "
            "`token` (signed token in the Socket.IO auth payload) or `custom` "
            "(PRROOM_AUTHENTICATE decides)", choices=("none", "token", "custom")),
    Setting("PRROOM_SECRET_KEY", None, parse_str,
            "Key that signs tokens; empty = the app's SECRET_KEY", secret=True),
    Setting("PRROOM_TOKEN_MAX_AGE", 900.0, parse_float,
            "Seconds a token stays valid for connecting", 1, 30 * 86400),
    Setting("PRROOM_AUTHENTICATE", None, parse_callable,
            "`custom` mode: `authenticate(auth, request)` returning a username or refusing "
            "(None); a callable or 'module:name'"),
    Setting("PRROOM_CAN_JOIN", None, parse_callable,
            "`can_join(identity, pull_request_id)` -> bool, checked at join on top of a "
            "token's scope; a callable or 'module:name'"),
    Setting("PRROOM_MESSAGE_RATE", 5.0, parse_float,
            "Messages per second a socket may send, sustained", 0.01, 1_000_000),
    Setting("PRROOM_MESSAGE_BURST", 20, parse_int,
            "Messages a socket may send at once before the rate applies", 1, 1_000_000),
    Setting("PRROOM_TYPING_RATE", 5.0, parse_float,
            "typing/stop-typing events per second per socket", 0.01, 1_000_000),
    Setting("PRROOM_TYPING_BURST", 20, parse_int,
            "typing/stop-typing burst per socket", 1, 1_000_000),
    Setting("PRROOM_ROOM_RATE", 2.0, parse_float,
            "join/leave events per second per socket", 0.01, 1_000_000),
    Setting("PRROOM_ROOM_BURST", 30, parse_int,
            "join/leave burst per socket", 1, 1_000_000),
    Setting("PRROOM_RATE_LIMIT_DISCONNECT_AFTER", 50, parse_int,
            "Rate-limited events after which the socket is disconnected (counted until it "
            "goes 60 s without a refusal; accepted events do not reset the count)", 1,
            1_000_000),
    Setting("PRROOM_MAX_ROOMS_PER_SOCKET", 50, parse_int,
            "Rooms one connection may be in at once", 1, 1_000_000),
    Setting("PRROOM_MAX_CONNECTIONS_PER_IDENTITY", 20, parse_int,
            "Connections of one authenticated identity at once, cluster-wide", 1, 1_000_000),
    Setting("PRROOM_MAX_QUEUED_PACKETS", 2000, parse_int,
            "Packets waiting to be written to one client before it is dropped as too slow",
            10, 10_000_000),
    Setting("PRROOM_MAX_SESSIONS_PER_ADDRESS", 256, parse_int,
            "Engine.IO sessions open at once from one client address (behind "
            "PRROOM_TRUSTED_PROXIES: the forwarded address); more handshakes are answered "
            "401; 0 = no cap", 0, 1_000_000),
    Setting("PRROOM_TRUSTED_PROXIES", ("127.0.0.1", "::1"), parse_networks,
            "Proxies whose X-Forwarded-For names the client (addresses or CIDR networks, "
            "comma-separated); empty = none: every peer is the client"),
    Setting("PRROOM_MAX_QUEUED_BYTES", 4_194_304, parse_int,
            "Bytes waiting to be written to one WebSocket client (beyond what the kernel "
            "took) before it is dropped as too slow", 65536, 1_000_000_000),
    Setting("PRROOM_MESSAGE_QUEUE", "", parse_queue_url,
            "Message queue URL (redis://host:6379/0; redis+sentinel://... and "
            "redis+cluster://host:port,... too) joining several prroom processes into one "
            "service; empty = one process, in memory", flag=True),
    Setting("PRROOM_CHANNEL", "prroom", parse_str,
            "Name under which this deployment's traffic and presence live in the queue, so "
            "two deployments can share one Redis"),
    Setting("PRROOM_QUEUE_PUBSUB", "auto", parse_str,
            "Clustered mode: how room channels are carried: `sharded` (Redis 7's SSUBSCRIBE/"
            "SPUBLISH, as Redis Cluster needs), `plain` (SUBSCRIBE/PUBLISH), or `auto` "
            "(sharded when the server has it); every process of a deployment must agree",
            choices=("auto", "sharded", "plain")),
    Setting("PRROOM_PRESENCE_TTL", 15.0, parse_float,
            "Clustered mode: seconds after which a process that stopped heartbeating (killed, "
            "host lost) is reaped and its users announced as left", 1, 3600),
    Setting("PRROOM_POST_TOKENS", None, parse_post_tokens,
            "Bearer tokens allowed to POST messages over HTTP, each bound to the bot name its "
            "messages carry and optionally to some pull requests: comma-separated "
            "`TOKEN=BOTNAME` or `TOKEN=BOTNAME:PR+PR` entries, tokens of at least 16 "
            "characters; empty = the endpoint is off", secret=True),
    Setting("PRROOM_POST_RATE", 10.0, parse_float,
            "HTTP posts per second per token, sustained", 0.01, 1_000_000),
    Setting("PRROOM_POST_BURST", 50, parse_int, "HTTP posts per token at once", 1,
            1_000_000),
    Setting("PRROOM_ADMIN_TOKEN", None, parse_str,
            "Bearer token of the admin endpoint (`POST /admin/disconnect-identity`), at "
            "least 32 characters; empty = the endpoint is off", secret=True),
    Setting("PRROOM_METRICS_PATH", "", parse_str,
            "Path of the Prometheus metrics endpoint under the URL prefix (e.g. /metrics); "
            "empty = off"),
    Setting("PRROOM_METRICS_TOKEN", None, parse_str,
            "Bearer token required to read the metrics; empty = none required", secret=True),
    Setting("PRROOM_ASYNC_MODE", "auto", parse_str,
            "Concurrency model when prroom creates the SocketIO: `auto` picks gevent when gevent "
            "has monkey-patched the process and threading otherwise (flask run)",
            choices=("auto", "gevent", "threading")),
    Setting("PRROOM_BLOCKING_THRESHOLD", 100.0, parse_float,
            "Under gevent: milliseconds the event loop may be held before prroom logs the "
            "stack of the code that held it and counts it in the metrics; 0 = off",
            0, 600_000),
    Setting("PRROOM_WEBSOCKET_WRITES", "direct", parse_str,
            "How WebSocket packets go out under gevent: `direct` (written by whoever sends "
            "them, pings from a timer: no writer or ping greenlet per connection; "
            "prroom/transport/writes.py) or `engineio` (python-engineio's own "
            "writer greenlet)",
            choices=("direct", "engineio")),
    Setting("PRROOM_EVENT_PATH", "direct", parse_str,
            "How prroom's own events get from a WebSocket frame to their handler under "
            "gevent: `direct` (decoded once, straight to python-socketio's event entry point; "
            "prroom/transport/event_path.py) or `library` (through python-engineio's and "
            "python-socketio's packet layers, as every other packet is)",
            choices=("direct", "library")),
    Setting("PRROOM_IDLE_CONNECTIONS", "loop", parse_str,
            "What holds a WebSocket connection while its client is silent, under gevent and "
            "prroom's gunicorn worker: `loop` (a callback on the socket's event-loop watcher; "
            "a few shared greenlets read when input arrives; prroom/transport/idle.py) or "
            "`greenlet` (the greenlet that accepted it, parked in python-engineio's read "
            "loop). `loop` needs PRROOM_EVENT_PATH=direct and PRROOM_WEBSOCKET_WRITES=direct",
            choices=("loop", "greenlet")),
    # The chat page (prroom/server/web.py) loads the official socket.io-client build from here.
    Setting("PRROOM_SOCKETIO_CLIENT_URL", DEFAULT_SOCKETIO_CLIENT_URL, parse_str,
            "Where the chat page loads socket.io-client from: an http(s) URL or a path "
            "(ignored when PRROOM_SOCKETIO_CLIENT_FILE is set)"),
    Setting("PRROOM_SOCKETIO_CLIENT_INTEGRITY", DEFAULT_SOCKETIO_CLIENT_INTEGRITY, parse_str,
            "Subresource Integrity hash of the file at PRROOM_SOCKETIO_CLIENT_URL; empty = none"),
    Setting("PRROOM_SOCKETIO_CLIENT_FILE", "", parse_str,
            "A local socket.io-client build (socket.io.min.js) that the blueprint serves and "
            "the chat page loads instead of PRROOM_SOCKETIO_CLIENT_URL; empty = off"),
    Setting("PRROOM_MAX_ATTACHMENTS", 10, parse_int,
            "Binary attachments one Socket.IO packet may announce; more closes that "
            "connection (socket.io's maxAttachments)", 1, 1000),
    Setting("PRROOM_CONNECT_TIMEOUT", 45.0, parse_float,
            "Seconds an Engine.IO session may stay without connecting to a Socket.IO "
            "namespace (where authentication happens), or after leaving its last one, "
            "before it is closed", 1, 3600),
    Setting("PRROOM_RECOVERY_WINDOW", 0.0, parse_float,
            "Seconds a lost connection's session (rooms, identity, missed room messages) is "
            "kept for socket.io-client's connection state recovery (in Redis when "
            "PRROOM_MESSAGE_QUEUE is set, for every process); 0 = off", 0, 3600),
    Setting("PRROOM_RECOVERY_BUFFER", 1000, parse_int,
            "Room broadcasts kept per room for recovery; a session that missed more gets a "
            "fresh session", 1, 1_000_000),
    Setting("PRROOM_RECOVERY_SESSIONS", 100_000, parse_int,
            "With recovery on: lost sessions one process keeps at most (the oldest goes "
            "first), the bound under a flood of disconnects", 1, 10_000_000),
    Setting("PRROOM_PRESENCE_GRACE", 5.0, parse_float,
            "With recovery on: seconds after a lost connection before its user is announced "
            "as left (at most PRROOM_RECOVERY_WINDOW)", 0, 3600),
    Setting("PRROOM_ACCEPT_MISSING", None, parse_names,
            "Protection seams (names in the docs' library seams table) the server may start "
            "without when the installed library lacks what they need; empty = refuse to start"),
)

#: How the server process runs (read by prroom/gunicorn_config.py and `prroom serve`, from
#: the environment only: they exist before any Flask app does).
SERVER_SETTINGS: Tuple[Setting, ...] = (
    Setting("PRROOM_HOST", "127.0.0.1", parse_str, "Address to listen on", flag=True),
    Setting("PRROOM_PORT", 8000, parse_int, "Port to listen on (PORT works too)", 0, 65535,
            flag=True),
    Setting("PRROOM_BIND", "", parse_str,
            "A full gunicorn bind (0.0.0.0:80, unix:/run/prroom.sock); overrides host/port",
            flag=True),
    Setting("PRROOM_WORKER_CONNECTIONS", 10000, parse_int,
            "Simultaneous connections the worker accepts", 1, 1_000_000, flag=True),
    Setting("PRROOM_WORKER_TIMEOUT", 30, parse_int, "gunicorn's worker timeout, seconds", 1,
            86400),
    Setting("PRROOM_GRACEFUL_TIMEOUT", 10, parse_int,
            "Seconds to finish after SIGTERM before connections are cut", 1, 3600),
    Setting("PRROOM_LOG_LEVEL", "info", parse_str, "Log level",
            choices=("debug", "info", "warning", "error", "critical"), flag=True),
    Setting("PRROOM_LOG_FORMAT", "text", parse_str, "Log line format",
            choices=("text", "json"), flag=True),
    Setting("PRROOM_ACCESS_LOG", "-", parse_str,
            "Access log file, - for stdout, empty for none"),
    Setting("PRROOM_CONTROL_SOCKET", "", parse_str,
            "gunicorn 26+'s control socket path; empty = off (instances on one host would "
            "collide on the default path)"),
    Setting("PRROOM_HEADER_TIMEOUT", 10.0, parse_float,
            "Seconds a client has to send a request line and headers, from when it connects "
            "(or, on a kept-alive connection, from its first byte); then it is cut", 1, 3600),
    Setting("PRROOM_BODY_TIMEOUT", 10.0, parse_float,
            "Seconds a client has to send a request's body (up to PRROOM_MAX_FRAME_BYTES), "
            "from the end of its headers; then it is answered 408 and cut, unseen by the "
            "application", 1, 3600),
    Setting("PRROOM_MAX_HEADER_BYTES", 16384, parse_int,
            "Most bytes of request headers, all lines together; more is answered 431", 1024,
            1_048_576),
)

SETTINGS_BY_KEY = {setting.key: setting for setting in SETTINGS}
DEFAULTS = {setting.key: setting.default for setting in SETTINGS}
