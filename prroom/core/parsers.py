"""How each ``PRROOM_*`` value is read and checked: the parsers the declarations name
(:mod:`prroom.core.declarations`), and the checks that span several settings.

Each parser takes the raw value (a string from the environment, or whatever a host app put
in ``app.config``) and returns the typed value or raises ``ValueError``/``TypeError``;
:meth:`~prroom.core.declarations.Setting.coerce` turns that into one :class:`ConfigError`
line naming the key.
"""
from __future__ import annotations

import ipaddress
import math
import os
import re
from typing import Any, Callable, Dict, FrozenSet, NamedTuple, Optional, Tuple


class ConfigError(ValueError):
    """A ``PRROOM_*`` setting has a value prroom cannot use."""


def parse_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError("a boolean is not an integer")
    if isinstance(raw, float) and not raw.is_integer():
        raise ValueError("not a whole number")
    if isinstance(raw, str):
        raw = raw.strip()
    return int(raw)


def parse_float(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError("a boolean is not a number")
    value = float(raw)
    if not math.isfinite(value):  # NaN would pass every range check
        raise ValueError("not a finite number")
    return value


def parse_str(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError("expected a string")
    return raw


def parse_names(raw: Any) -> Optional[Tuple[str, ...]]:
    """Comma-separated names, parsed as origins are (:meth:`Setting.expected` differs)."""
    return parse_origins(raw)


def parse_origins(raw: Any) -> Optional[Tuple[str, ...]]:
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


def parse_post_tokens(raw: Any) -> Optional[Tuple[PostToken, ...]]:
    """``TOKEN=BOTNAME`` or ``TOKEN=BOTNAME:PR+PR`` entries, comma-separated; checked
    (with messages that never echo a token) by :func:`check_post_tokens`."""
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
        if colon:  # an unreadable list stays empty, refused by check_post_tokens
            try:
                pull_requests = frozenset(parse_int(pr) for pr in scope.split("+"))
            except ValueError:
                pull_requests = frozenset()
            if pull_requests and min(pull_requests) < 1:
                pull_requests = frozenset()
        entries.append(PostToken(token.strip(), bot.strip(), pull_requests))
    return tuple(entries) or None


def check_post_tokens(values: Dict[str, Any]) -> None:
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


def parse_networks(raw: Any) -> Tuple[str, ...]:
    """Comma-separated IP addresses or CIDR networks; empty = none."""
    items = parse_origins(raw) or ()
    for item in items:
        ipaddress.ip_network(item, strict=False)  # ValueError: refused at start
    return items


def format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


_FRAME_SOURCE = re.compile(r"(https?|wss?)://(\*\.)?[A-Za-z0-9.-]+(:(\d{1,5}|\*))?"
                           r"|https?:")


def parse_frame_ancestors(raw: Any) -> Tuple[str, ...]:
    """CSP ``frame-ancestors`` sources: ``'self'``, ``'none'`` (alone) or origins.

    Each source is checked whole, so nothing else (``;``, another directive) can be
    smuggled into the header.
    """
    if isinstance(raw, (list, tuple)):
        raw = " ".join(str(part) for part in raw)
    items = [part for part in re.split(r"[\s,]+", parse_str(raw)) if part]
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


def parse_queue_url(raw: Any) -> str:
    """Empty, or a Redis/Valkey URL python-socketio's Redis manager understands."""
    value = parse_str(raw).strip()
    if value and not value.startswith(_QUEUE_SCHEMES):
        raise ValueError("expected a redis:// URL")
    if value.startswith("redis+sentinel://") and \
            len([part for part in value.split("://", 1)[1].split("/")[1:] if part]) < 2:
        raise ValueError("expected redis+sentinel://host:port[,host:port...]/db/service_name")
    if value.startswith("redis+cluster://") and not re.fullmatch(
            r"redis\+cluster://([^@/]*@)?[^:,/]+:\d+(,[^:,/]+:\d+)*/?", value):
        raise ValueError("expected redis+cluster://host:port[,host:port...]")
    return value


def parse_callable(raw: Any) -> Optional[Callable[..., Any]]:
    """A callable, or an import path ``"package.module:name"`` naming one."""
    if raw is None or callable(raw):
        given: Optional[Callable[..., Any]] = raw
        return given
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
    named: Callable[..., Any] = value
    return named


# The official CDN build of socket.io-client, pinned, with its Subresource Integrity hash
# (sha384 of dist/socket.io.min.js in the npm package socket.io-client@4.8.1, the same file
# the CDN serves).  Change both together.
DEFAULT_SOCKETIO_CLIENT_URL = "https://cdn.socket.io/4.8.1/socket.io.min.js"
DEFAULT_SOCKETIO_CLIENT_INTEGRITY = (
    "sha384-mkQ3/7FUtcGyoppY6bz/PORYoGqOl7/aSUMn2ymDOJcapfS6PHqxhRTMh1RR0Q6+")
_SRI_HASH = re.compile(r"^sha(256|384|512)-[A-Za-z0-9+/]+={0,2}$")


def check_origins(origins: Optional[Tuple[str, ...]], auth_mode: str) -> None:
    """Refuse any origin (``*``) with cookie-based (``custom``) authentication.

    A browser sends its cookies on a WebSocket to any site, whatever page opened it: with
    ``*`` every page on the web could connect as its visitors.
    """
    if origins == ("*",) and auth_mode == "custom":
        raise ConfigError("PRROOM_CORS_ALLOWED_ORIGINS='*' with PRROOM_AUTH_MODE='custom' "
                          "(cookie-based): expected the allowed origins listed instead")


def check_socketio_client(values: Dict[str, Any]) -> None:
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
