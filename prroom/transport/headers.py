"""Request headers as prroom's worker reads and keeps them.

pywsgi parses a request's headers with the ``email`` package into an ``http.client``
message; :func:`parse_request_headers` fills the same message directly for plain header
lines (and bounds the block's total size), and :class:`RequestHeaders` reads them back from
the WSGI environ for the access log, so the parsed message does not stay with a WebSocket
connection for its life.
"""
import email.parser
import re
from http import client
from typing import Any, Dict, List, Optional, Tuple

from gevent.pywsgi import OldMessage

from prroom.internals import http_bodies


class RequestHeaders:
    """A request's headers read back from its WSGI environ, instead of the parsed message.

    pywsgi's parsed ``http.client`` message (about 3 KB of objects, header strings
    included) would stay with a WebSocket connection for its whole life, beside the environ
    that holds the same values.  Only gunicorn's access log reads the headers again, as
    ``items()``.
    """

    __slots__ = ("_environ",)

    def __init__(self, environ: Dict[str, Any]) -> None:
        self._environ = environ

    def items(self) -> List[Tuple[str, str]]:
        """(Name, value) pairs: ``HTTP_X_REQUEST_ID`` is ``X-Request-Id``, as WSGI folds them."""
        pairs = [(key[5:].replace("_", "-").title(), value)
                 for key, value in self._environ.items() if key.startswith("HTTP_")]
        for key, name in (("CONTENT_TYPE", "Content-Type"), ("CONTENT_LENGTH", "Content-Length")):
            if self._environ.get(key):
                pairs.append((name, self._environ[key]))
        return pairs

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The value of header ``name`` (any case), else ``default``."""
        name = name.lower()
        return next((value for key, value in self.items() if key.lower() == name), default)


#: http.client's limits on one header line and on their number (its private names).
_MAX_LINE: int = getattr(client, "_MAXLINE", 65536)
_MAX_HEADERS: int = getattr(client, "_MAXHEADERS", 100)
#: A header line as most clients send it: a token, a colon, printable ASCII (or tabs).  The
#: value is matched greedily: it cannot hold the line's end, and a lazy match tried the end
#: after every one of its characters.
_PLAIN_HEADER = re.compile(rb"([!-9;-~]+):[ \t]*([\t -~]*)\r?\n")


class HeadersTooLarge(ValueError):
    """Request headers past ``PRROOM_MAX_HEADER_BYTES`` in total (answered 431)."""


def parse_request_headers(fp: Any, max_bytes: int = 16384) -> OldMessage:
    """The message ``http.client.parse_headers(fp, _class=OldMessage)`` returns, quicker.

    The lines are read as ``http.client`` reads them (same line and count limits), and
    together they may hold at most ``max_bytes`` (:class:`HeadersTooLarge` past it); when
    every one is a plain ``Name: value`` line, the message is filled in directly, with the
    pairs the ``email`` parser would have made.  Any other line (folded, non-ASCII, no
    name, ...) and the whole block goes to the ``email`` parser, as pywsgi would have it.
    """
    lines: List[bytes] = []
    remaining = max_bytes
    while True:
        line = fp.readline(min(_MAX_LINE, remaining) + 1)
        remaining -= len(line)
        if remaining < 0:
            raise HeadersTooLarge(f"request headers over {max_bytes} bytes")
        if len(line) > _MAX_LINE:
            raise client.LineTooLong("header line")
        lines.append(line)
        if len(lines) > _MAX_HEADERS:
            raise client.HTTPException("got more than %d headers" % _MAX_HEADERS)
        if line in (b"\r\n", b"\n", b""):
            break
    pairs = []
    for line in lines[:-1]:
        plain = _PLAIN_HEADER.fullmatch(line)
        if plain is None:
            text = b"".join(lines).decode("iso-8859-1")
            return email.parser.Parser(_class=OldMessage).parsestr(text)
        pairs.append((plain[1].decode("ascii"), plain[2].decode("ascii")))
    return http_bodies.header_message(pairs)
