"""The wire contract: what a client sends, what it gets refused with, and in which shape."""
from __future__ import annotations

import pytest

from prroom.core import protocol
from prroom.core.protocol import (
    ALL_ERROR_CODES,
    MAX_PULL_REQUEST_ID,
    ErrorCode,
    Limits,
    MessageRequest,
    ProtocolError,
    RoomRequest,
    error_event,
    failure,
    ok,
    parse_message_request,
    parse_room_request,
    room_name,
    unknown_event,
)

LIMITS = Limits(max_username_length=8, max_message_length=20)
ROOM = {"pullRequestId": 42, "username": "alice"}
MESSAGE = {"pullRequestId": 42, "username": "alice", "message": "hello"}


def refusal(parse, payload, limits=LIMITS) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse(payload, limits)
    return info.value


BOTH_PARSERS = pytest.mark.parametrize(
    "parse, base", [(parse_room_request, ROOM), (parse_message_request, MESSAGE)],
    ids=["room", "message"])


def with_(base, **changes):
    payload = dict(base)
    payload.update(changes)
    return payload


def without(base, key):
    return {k: v for k, v in base.items() if k != key}


# -- valid payloads -------------------------------------------------------------------

def test_room_request_valid():
    assert parse_room_request(ROOM, LIMITS) == RoomRequest(42, "alice")


def test_message_request_valid():
    assert parse_message_request(MESSAGE, LIMITS) == MessageRequest(42, "alice", "hello")


@BOTH_PARSERS
def test_extra_keys_are_ignored(parse, base):
    request = parse(with_(base, extra=True, token="x", nested={"a": 1}), LIMITS)
    assert request.pull_request_id == 42 and request.username == "alice"


@BOTH_PARSERS
@pytest.mark.parametrize("pull_request_id", [1, 7, MAX_PULL_REQUEST_ID])
def test_pull_request_id_accepted(parse, base, pull_request_id):
    assert parse(with_(base, pullRequestId=pull_request_id), LIMITS).pull_request_id \
        == pull_request_id


@BOTH_PARSERS
@pytest.mark.parametrize("username", ["Zoë", "李雷", "🙂smile", "o'brien", "a b", "x"])
def test_unicode_and_inner_space_usernames_accepted(parse, base, username):
    assert parse(with_(base, username=username), LIMITS).username == username


@BOTH_PARSERS
def test_username_at_exact_limit_accepted(parse, base):
    name = "u" * LIMITS.max_username_length
    assert parse(with_(base, username=name), LIMITS).username == name


def test_message_at_exact_limit_accepted():
    text = "m" * LIMITS.max_message_length
    assert parse_message_request(with_(MESSAGE, message=text), LIMITS).message == text


@pytest.mark.parametrize("text", ["a\tb", "line1\nline2", "crlf\r\nend", "  padded  ",
                                  "\n\nhi", "naïve ☃ 李"])
def test_message_delivered_as_sent_with_tabs_and_newlines(text):
    assert parse_message_request(with_(MESSAGE, message=text), LIMITS).message == text


def test_default_limits():
    assert Limits() == Limits(max_username_length=64, max_message_length=4000)
    assert parse_room_request(with_(ROOM, username="u" * 64), Limits()).username == "u" * 64
    assert refusal(parse_room_request, with_(ROOM, username="u" * 65), Limits()).code \
        == ErrorCode.INVALID_FIELD


# -- invalid payloads -----------------------------------------------------------------

@BOTH_PARSERS
@pytest.mark.parametrize("payload", [None, [], [ROOM], "payload", '{"a": 1}', 0, 42, 1.5,
                                     True, ("a",)],
                         ids=repr)
def test_payload_not_an_object(parse, base, payload):
    err = refusal(parse, payload)
    assert err.code == ErrorCode.INVALID_PAYLOAD
    assert "field" not in err.details


def test_payload_none_message_says_nothing():
    assert "nothing" in refusal(parse_room_request, None).message
    assert "list" in refusal(parse_room_request, []).message


@BOTH_PARSERS
@pytest.mark.parametrize("missing", ["pullRequestId", "username"])
def test_missing_field(parse, base, missing):
    err = refusal(parse, without(base, missing))
    assert err.code == ErrorCode.MISSING_FIELD
    assert err.details == {"field": missing}
    assert missing in err.message


def test_missing_message():
    err = refusal(parse_message_request, without(MESSAGE, "message"))
    assert (err.code, err.details) == (ErrorCode.MISSING_FIELD, {"field": "message"})


def test_empty_object_reports_pull_request_id_first():
    err = refusal(parse_message_request, {})
    assert err.to_dict()["field"] == "pullRequestId"


@BOTH_PARSERS
@pytest.mark.parametrize("value", [True, False, 1.0, 2.5, "1", "42", 0, -1, -42,
                                   2 ** 53, 2 ** 64, None, [1], {"id": 1}],
                         ids=repr)
def test_invalid_pull_request_id(parse, base, value):
    err = refusal(parse, with_(base, pullRequestId=value))
    assert err.code == ErrorCode.INVALID_FIELD
    assert err.details == {"field": "pullRequestId"}


@BOTH_PARSERS
@pytest.mark.parametrize("value", ["", " ", "  ", "\t", " bob", "bob ", "bo\nb", "bo\tb",
                                   "\x00", "bob\x00", "a\x1bb", "a\x7fb", "a\x85b",
                                   "\u00a0bob", None, 5, True, ["bob"], {"n": "bob"}],
                         ids=repr)
def test_invalid_username(parse, base, value):
    err = refusal(parse, with_(base, username=value))
    assert err.code == ErrorCode.INVALID_FIELD
    assert err.details["field"] == "username"


@BOTH_PARSERS
def test_username_one_over_limit(parse, base):
    err = refusal(parse, with_(base, username="u" * (LIMITS.max_username_length + 1)))
    assert err.code == ErrorCode.INVALID_FIELD
    assert err.details == {"field": "username", "limit": LIMITS.max_username_length}


@pytest.mark.parametrize("value", ["", " ", "   ", "\n\t ", None, 5, True, ["hi"],
                                   {"text": "hi"}],
                         ids=repr)
def test_invalid_message(value):
    err = refusal(parse_message_request, with_(MESSAGE, message=value))
    assert err.code == ErrorCode.INVALID_FIELD
    assert err.details == {"field": "message"}


def test_message_one_over_limit():
    err = refusal(parse_message_request,
                  with_(MESSAGE, message="m" * (LIMITS.max_message_length + 1)))
    assert err.code == ErrorCode.MESSAGE_TOO_LONG
    assert err.details == {"field": "message", "limit": LIMITS.max_message_length}
    assert str(LIMITS.max_message_length) in err.message


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x07", "\x08", "\x0b", "\x0c", "\x0e",
                                  "\x1b", "\x1f", "\x7f", "\x80", "\x9f"],
                         ids=repr)
def test_message_control_characters_refused(char):
    err = refusal(parse_message_request, with_(MESSAGE, message=f"hi{char}there"))
    assert err.code == ErrorCode.INVALID_FIELD
    assert err.details == {"field": "message"}


def test_validation_order_pull_request_id_then_username_then_message():
    bad: dict = {"pullRequestId": "1", "username": "", "message": ""}
    assert refusal(parse_message_request, bad).details["field"] == "pullRequestId"
    bad["pullRequestId"] = 1
    assert refusal(parse_message_request, bad).details["field"] == "username"
    bad["username"] = "bob"
    assert refusal(parse_message_request, bad).details["field"] == "message"


# -- reply shapes ---------------------------------------------------------------------

def test_room_name():
    assert room_name(1) == "pr:1"
    assert room_name(MAX_PULL_REQUEST_ID) == f"pr:{2 ** 53 - 1}"


def test_ok_shape():
    assert ok() == {"ok": True}
    assert ok(pullRequestId=3, room="pr:3") == {"ok": True, "pullRequestId": 3, "room": "pr:3"}


def test_protocol_error_to_dict_includes_details():
    err = ProtocolError(ErrorCode.MESSAGE_TOO_LONG, "too long", field="message", limit=5)
    assert str(err) == "too long"
    assert err.to_dict() == {"code": "message-too-long", "message": "too long",
                             "field": "message", "limit": 5}


def test_failure_shape():
    err = ProtocolError(ErrorCode.NOT_A_MEMBER, "join first", pullRequestId=7)
    assert failure(err) == {"ok": False, "error": {"code": "not-a-member",
                                                    "message": "join first",
                                                    "pullRequestId": 7}}


def test_error_event_shape_with_and_without_pull_request_id():
    err = ProtocolError(ErrorCode.INVALID_FIELD, "bad", field="username")
    assert error_event("join-pr-room", err, 9) == {
        "ok": False, "event": "join-pr-room", "pullRequestId": 9,
        "error": {"code": "invalid-field", "message": "bad", "field": "username"}}
    body = error_event("typing", err)
    assert "pullRequestId" not in body
    assert body == {"ok": False, "event": "typing", "error": err.to_dict()}


def test_unknown_event():
    err = unknown_event("no-such-event")
    assert isinstance(err, ProtocolError)
    assert err.code == ErrorCode.UNKNOWN_EVENT
    assert "no-such-event" in err.message
    for event in protocol.CLIENT_EVENTS:
        assert event in err.message  # tells the client what it can send


def test_unknown_event_name_is_truncated():
    err = unknown_event("x" * 5000)
    assert "x" * 100 in err.message and "x" * 101 not in err.message


def test_all_error_codes_complete_and_unique():
    expected = {"invalid-payload", "missing-field", "invalid-field", "message-too-long",
                "not-a-member", "identity-mismatch", "unknown-event", "internal-error",
                "unauthorized", "forbidden", "rate-limited", "too-many-rooms",
                "too-many-connections", "binary-payload", "token-expired", "identity-revoked",
                "authentication-error"}
    assert set(ALL_ERROR_CODES) == expected
    assert len(ALL_ERROR_CODES) == len(expected)
    assert all(isinstance(code, str) for code in ALL_ERROR_CODES)


def test_event_names():
    assert protocol.CLIENT_EVENTS == ("join-pr-room", "leave-pr-room",
                                      "send-message-to-pr-room", "typing", "stop-typing")
    assert (protocol.MESSAGE, protocol.ERROR) == ("pr-room-message", "pr-room-error")
