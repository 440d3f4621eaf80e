"""Client text in log lines: escaped and cut, in one place.

A log line's format string is prroom's (or a library's); its arguments are where client
text ends up: usernames, event names, ``X-Forwarded-For``, origins.  A newline in one of
them would start a forged line of its own (``x\\n[date] [1] [WARNING] FORGED ...``), an
escape sequence would rewrite an operator's terminal, and a long one would cost a log
line per byte sent.  :class:`ClientTextFilter`, on prroom's loggers and on the server's
log handlers, rewrites every argument of every record before any formatter (text or
JSON) sees it: control and line-separator characters become ``\\n``, ``\\x1b``...,
backslashes are doubled (so an escaped newline cannot be forged either), and anything
longer than :data:`MAX_ARGUMENT_CHARS` is cut.  Numbers pass unchanged; an argument
prroom built itself and wants kept as it is (a stack trace) is wrapped in :class:`Verbatim`.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Mapping

#: Longest argument kept whole in a log line, in characters (a username is far shorter).
MAX_ARGUMENT_CHARS = 200
#: Longest message of a library's logger (python-engineio writes a client's ``Origin``
#: into the message itself, not into an argument).
MAX_LIBRARY_MESSAGE_CHARS = 1000
#: Loggers whose messages (not only their arguments) are prroom's or gunicorn's own text.
OWN_LOGGERS = ("prroom", "gunicorn")

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape_table() -> Dict[int, str]:
    table = {ord(char): text for char, text in _NAMED.items()}
    for code in [*range(0x20), 0x7F, *range(0x80, 0xA0)]:
        table.setdefault(code, f"\\x{code:02x}")
    for code in (0x2028, 0x2029, 0x85):  # line and paragraph separators
        table[code] = f"\\u{code:04x}"
    return table


_TABLE = _escape_table()


#: Marks a record already escaped (an attribute of prroom's on the record).
ESCAPED = "prroom_escaped"

class Verbatim(str):
    """A log argument prroom produced itself and that keeps its newlines (a stack)."""

    __slots__ = ()


def escape(text: str, limit: int = MAX_ARGUMENT_CHARS) -> str:
    """``text`` on one line, control characters escaped, cut to ``limit`` characters."""
    cut = ""
    if len(text) > limit:
        cut = f"...(+{len(text) - limit} chars)"
        text = text[:limit]
    if "\\" in text or not text.isprintable():
        text = text.translate(_TABLE)
        # a character that is neither printable nor a control (U+FEFF, unassigned...)
        text = "".join(char if char.isprintable() else f"\\u{ord(char):04x}"
                       for char in text)
    return text + cut


def safe_argument(value: Any) -> Any:
    """What a log record carries in place of ``value``."""
    if value is None or isinstance(value, (bool, int, float, Verbatim)):
        return value
    return escape(value if isinstance(value, str) else str(value))


class ClientTextFilter(logging.Filter):
    """Escape and cut every argument of a record (see the module's docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record.args`` in place; never drops a record."""
        args = record.args
        if getattr(record, ESCAPED, False):
            return True
        setattr(record, ESCAPED, True)  # a logger's filter, then a handler's: once
        if isinstance(record.msg, str) and not record.name.startswith(OWN_LOGGERS):
            record.msg = escape(record.msg, MAX_LIBRARY_MESSAGE_CHARS)
        if not args:
            return True
        if isinstance(args, Mapping):
            record.args = {key: safe_argument(value) for key, value in args.items()}
        else:
            record.args = tuple(safe_argument(value) for value in args)
        return True


#: The loggers whose lines carry client text: prroom's, and the Socket.IO stack's.
ESCAPED_LOGGERS = ("prroom", "engineio.server", "socketio.server")


def install(logger_names: Any = ESCAPED_LOGGERS) -> None:
    """Put one :class:`ClientTextFilter` on each named logger (once), whatever handlers the
    host app's logging configuration gives them."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, ClientTextFilter) for existing in logger.filters):
            logger.addFilter(ClientTextFilter())
