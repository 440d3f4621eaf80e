"""The wire contract: event names, payload validation, error codes, reply shapes.

Pure functions and values only (no Socket.IO, no Flask), so every rule here is unit-tested
in microseconds and the hot path stays cheap.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Dict, NamedTuple, Optional

from prroom.core.config import DEFAULTS

if TYPE_CHECKING:  # pragma: no cover
    from prroom.core.config import Settings

# Events a client sends.
JOIN = "join-pr-room"
LEAVE = "leave-pr-room"
SEND_MESSAGE = "send-message-to-pr-room"
TYPING = "typing"
STOP_TYPING = "stop-typing"
CLIENT_EVENTS = (JOIN, LEAVE, SEND_MESSAGE, TYPING, STOP_TYPING)

# Events the server sends.
MESSAGE = "pr-room-message"
ERROR = "pr-room-error"
MEMBERS = "pr-room-members"          # to a joiner: who is in the room
USER_JOINED = "pr-room-user-joined"  # to the others: a user's first socket joined
USER_LEFT = "pr-room-user-left"      # to the others: a user's last socket left
SHUTDOWN = "pr-room-server-shutdown"  # to everyone on a process about to stop

#: Added to a success ack when the message queue was unreachable: the request took effect,
#: but only members connected to this server process were told.
CLUSTER_UNAVAILABLE = {"code": "cluster-unavailable",
                       "message": "delivered only to members on this server: the message "
                                  "queue is unreachable"}

# Largest id a JavaScript client can represent exactly (Number.MAX_SAFE_INTEGER).
MAX_PULL_REQUEST_ID = 2 ** 53 - 1

# C0 and C1 control characters and DEL.  A chat message may still carry tab and newlines.
_CONTROL_IN_NAME = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_IN_MESSAGE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


class ErrorCode:
    """Stable machine-readable error codes; clients branch on these, never on the text."""

    INVALID_PAYLOAD = "invalid-payload"      # payload missing or not an object
    MISSING_FIELD = "missing-field"          # a required field is absent
    INVALID_FIELD = "invalid-field"          # a field has the wrong type or value
    MESSAGE_TOO_LONG = "message-too-long"    # message longer than PRROOM_MAX_MESSAGE_LENGTH
    NOT_A_MEMBER = "not-a-member"            # the socket has not joined that room
    IDENTITY_MISMATCH = "identity-mismatch"  # username differs from the one the socket has there
    UNKNOWN_EVENT = "unknown-event"          # an event name prroom does not handle
    UNAUTHORIZED = "unauthorized"            # connection refused: no or bad credentials
    AUTHENTICATION_ERROR = "authentication-error"  # connect: the host's authenticator raised
    FORBIDDEN = "forbidden"                  # this identity may not join that room
    RATE_LIMITED = "rate-limited"            # too many events; retry after `retryAfter` s
    TOO_MANY_ROOMS = "too-many-rooms"        # PRROOM_MAX_ROOMS_PER_SOCKET reached
    TOO_MANY_CONNECTIONS = "too-many-connections"  # PRROOM_MAX_CONNECTIONS_PER_IDENTITY
    INTERNAL_ERROR = "internal-error"        # a bug on our side; logged with a traceback
    BINARY_PAYLOAD = "binary-payload"        # binary data (Buffer, ArrayBuffer, bytes) sent
    TOKEN_EXPIRED = "token-expired"          # the connection's identity expired: it is closed
    IDENTITY_REVOKED = "identity-revoked"    # an operator disconnected this identity


ALL_ERROR_CODES = tuple(value for name, value in vars(ErrorCode).items()
                        if not name.startswith("_"))


class ProtocolError(Exception):
    """A request prroom refuses: carries the stable code, a human message and extra fields."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def to_dict(self) -> Dict[str, Any]:
        """The ``error`` object sent to the client."""
        body = {"code": self.code, "message": self.message}
        body.update(self.details)
        return body


class Limits(NamedTuple):
    """Size limits applied while parsing payloads (defaults: the settings' defaults)."""

    max_username_length: int = DEFAULTS["PRROOM_MAX_USERNAME_LENGTH"]
    max_message_length: int = DEFAULTS["PRROOM_MAX_MESSAGE_LENGTH"]

    @classmethod
    def of(cls, settings: "Settings") -> "Limits":
        """The limits a server with ``settings`` applies."""
        return cls(settings.max_username_length, settings.max_message_length)


class RoomRequest(NamedTuple):
    """A validated join / leave / typing / stop-typing payload.

    ``username`` is None only when the caller allowed it to be omitted (an authenticated
    connection, whose name comes from its identity).
    """

    pull_request_id: int
    username: Optional[str]


class MessageRequest(NamedTuple):
    """A validated send-message-to-pr-room payload."""

    pull_request_id: int
    username: Optional[str]
    message: str


#: Every pull request room's name starts so (the cluster gives these rooms channels of their own).
ROOM_PREFIX = "pr:"


def room_name(pull_request_id: int) -> str:
    """The Socket.IO room of a pull request: ``pr:{id}``."""
    return f"{ROOM_PREFIX}{pull_request_id}"


def _require_object(payload: Any) -> Dict[str, Any]:
    if not isinstance(payload, dict):
        kind = "nothing" if payload is None else type(payload).__name__
        raise ProtocolError(ErrorCode.INVALID_PAYLOAD,
                            f"payload must be a JSON object, got {kind}")
    return payload


def _field(payload: Dict[str, Any], name: str) -> Any:
    try:
        return payload[name]
    except KeyError:
        raise ProtocolError(ErrorCode.MISSING_FIELD, f"'{name}' is required",
                            field=name) from None


def parse_pull_request_id(value: Any) -> int:
    """A positive integer JSON number; bools, floats and numeric strings are refused."""
    # type() rather than isinstance(): bool is a subclass of int and must be refused.
    if type(value) is not int or not 0 < value <= MAX_PULL_REQUEST_ID:
        raise ProtocolError(ErrorCode.INVALID_FIELD,
                            "'pullRequestId' must be a positive integer",
                            field="pullRequestId")
    return value


def parse_username(value: Any, limits: Limits) -> str:
    """A non-empty string of bounded length, no control characters, no outer whitespace."""
    if not isinstance(value, str) or not value or value != value.strip():
        raise ProtocolError(ErrorCode.INVALID_FIELD,
                            "'username' must be a non-empty string without leading or "
                            "trailing spaces", field="username")
    if len(value) > limits.max_username_length:
        raise ProtocolError(ErrorCode.INVALID_FIELD,
                            f"'username' must be at most {limits.max_username_length} "
                            "characters", field="username", limit=limits.max_username_length)
    if _CONTROL_IN_NAME.search(value):
        raise ProtocolError(ErrorCode.INVALID_FIELD,
                            "'username' must not contain control characters", field="username")
    return value


def parse_message_text(value: Any, limits: Limits) -> str:
    """Non-empty after trimming, at most the configured length; delivered as sent."""
    if not isinstance(value, str) or not value.strip():
        raise ProtocolError(ErrorCode.INVALID_FIELD, "'message' must be a non-empty string",
                            field="message")
    if len(value) > limits.max_message_length:
        raise ProtocolError(ErrorCode.MESSAGE_TOO_LONG,
                            f"'message' is {len(value)} characters; the limit is "
                            f"{limits.max_message_length}", field="message",
                            limit=limits.max_message_length)
    if _CONTROL_IN_MESSAGE.search(value):
        raise ProtocolError(ErrorCode.INVALID_FIELD,
                            "'message' must not contain control characters other than tab "
                            "and newlines", field="message")
    return value


def _username(payload: Dict[str, Any], limits: Limits, required: bool) -> Optional[str]:
    if not required and payload.get("username") is None:
        return None
    return parse_username(_field(payload, "username"), limits)


def parse_room_request(payload: Any, limits: Limits,
                       username_required: bool = True) -> RoomRequest:
    """Validate ``{pullRequestId, username}``; extra fields are ignored."""
    payload = _require_object(payload)
    return RoomRequest(parse_pull_request_id(_field(payload, "pullRequestId")),
                       _username(payload, limits, username_required))


def parse_message_request(payload: Any, limits: Limits,
                          username_required: bool = True) -> MessageRequest:
    """Validate ``{pullRequestId, username, message}``; extra fields are ignored."""
    payload = _require_object(payload)
    return MessageRequest(parse_pull_request_id(_field(payload, "pullRequestId")),
                          _username(payload, limits, username_required),
                          parse_message_text(_field(payload, "message"), limits))


def internal_error() -> ProtocolError:
    """The error for a request the server failed on (a bug, logged with its traceback)."""
    return ProtocolError(ErrorCode.INTERNAL_ERROR, "the server failed to handle this request")


def unknown_event(event: Any) -> ProtocolError:
    """The error for an event name prroom does not handle."""
    return ProtocolError(ErrorCode.UNKNOWN_EVENT,
                         f"unknown event {str(event)[:100]!r}; prroom handles "
                         + ", ".join(CLIENT_EVENTS))


def closing_event(error: ProtocolError) -> Dict[str, Any]:
    """The ``pr-room-error`` sent just before the server closes a connection on its own
    initiative (``token-expired``, ``identity-revoked``): no request of the client's
    caused it, so ``event`` is null."""
    return {"ok": False, "event": None, "error": error.to_dict()}


def ok(**fields: Any) -> Dict[str, Any]:
    """A successful reply: ``{ok: true, ...}``."""
    return {"ok": True, **fields}


def failure(error: ProtocolError) -> Dict[str, Any]:
    """A refused request's ack: ``{ok: false, error: {code, message, ...}}``."""
    return {"ok": False, "error": error.to_dict()}


def error_event(event: str, error: ProtocolError,
                pull_request_id: Optional[int] = None) -> Dict[str, Any]:
    """The ``pr-room-error`` payload: the failed ack plus the event it answers."""
    body = {"ok": False, "event": event, "error": error.to_dict()}
    if pull_request_id is not None:
        body["pullRequestId"] = pull_request_id
    return body
