"""gevent pywsgi's request objects, as prroom's worker reads and refuses requests.

Refusing an HTTP request body without reading it:

A view that answers 411 or 413 never touches ``wsgi.input``, but pywsgi's handler then reads
and throws away whatever body is left, to keep the connection usable
(``WSGIHandler.handle_one_response`` calls ``wsgi_input._discard()``): a client announcing
100 MB would hold the connection and the worker's time until it sent them all.  The refusal
closes the connection instead (``Connection: close``), so the body is never needed.
"""
from __future__ import annotations

from typing import Any, List, Mapping, Tuple


def leave_body_unread(environ: Mapping[str, Any]) -> bool:
    """Make pywsgi skip reading the request's remaining body after the response; True if
    it could (the server is pywsgi).  The response must close the connection.

    pywsgi's ``Input`` has ``__slots__``; its ``_discard`` reads only while ``position`` is
    short of ``content_length`` or the body is chunked: the stream is marked as read to
    its end.
    """
    stream = environ.get("wsgi.input")
    if stream is None or not all(hasattr(stream, name) for name in _INPUT_STATE):
        return False
    stream.position = stream.content_length or 0
    stream.chunked_input = False
    return True


#: the pywsgi ``Input`` attributes ``_discard`` decides by
_INPUT_STATE = ("_discard", "position", "content_length", "chunked_input")


def header_message(pairs: List[Tuple[str, str]]) -> Any:
    """The ``OldMessage`` pywsgi's header parsing would have made of plain ``(name, value)``
    lines (its ``_headers``), with the empty body the ``email`` parser leaves."""
    from gevent.pywsgi import OldMessage

    message = OldMessage()
    message._headers = pairs
    message.set_payload("")
    return message
