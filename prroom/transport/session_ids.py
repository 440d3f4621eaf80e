"""Engine.IO session ids kept out of the logs: each shown as a short hash of it.

The ``sid`` of a long-polling request is a bearer secret for its session (a request needs
nothing else): the access log (:func:`redact_session_ids`) and the error log
(:class:`SessionIdFilter`) show its :func:`session_tag` instead, which still lets an
operator follow one session's lines.
"""
import hashlib
import logging
import re

#: ``sid=<value>`` in a query string or request line (the value ends at & or a space).
_SESSION_ID = re.compile(r"(?<![^?&])sid=([^& ]*)")
#: An Engine.IO session id in a log message: prroom's ``eio_sid=<id>``, and python-engineio's
#: "Invalid session <id>", "... for session <id> ...", "Cannot send to sid <id>".
_LOGGED_SESSION_ID = re.compile(r"(\beio_sid=|\bsession |\bto sid )([A-Za-z0-9_-]{8,})")


def session_tag(session_id: str) -> str:
    """What the logs show for an Engine.IO session id: a short hash (``~`` and 10 hex digits).

    The id is a bearer secret for its session (a long-polling request needs nothing else);
    its tag still lets an operator follow one session's lines, and gives the id away to no
    one.
    """
    return "~" + hashlib.sha256(session_id.encode()).hexdigest()[:10]


def redact_session_ids(text: str) -> str:
    """``text`` (a query string, a request line) with each ``sid=`` value as its tag."""
    if "sid=" not in text:
        return text
    return _SESSION_ID.sub(lambda found: "sid=" + session_tag(found[1]), text)


class SessionIdFilter(logging.Filter):
    """Show Engine.IO session ids in log records as their :func:`session_tag`.

    For the ``prroom``, ``engineio.server`` and ``socketio.server`` loggers (prroom's
    ``eio_sid=`` and python-engineio's own "Invalid session <id>"...).  Socket.IO session
    ids (``sid=`` in prroom's connect and join lines) stay: no client can use one.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message when it holds a session id; never drop a record."""
        message = record.getMessage()
        if "sid" in message or "session" in message:
            redacted = _LOGGED_SESSION_ID.sub(
                lambda found: found[1] + session_tag(found[2]), message)
            if redacted != message:
                record.msg, record.args = redacted, ()
        return True


def filter_session_ids() -> None:
    """Add :class:`SessionIdFilter` to the loggers that may name an Engine.IO session."""
    for name in ("prroom", "engineio.server", "socketio.server"):
        logger = logging.getLogger(name)
        if not any(isinstance(each, SessionIdFilter) for each in logger.filters):
            logger.addFilter(SessionIdFilter())
