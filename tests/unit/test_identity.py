"""Identity policies: join names, signed tokens with scope and expiry, host callables."""
import time
from unittest.mock import ANY

import pytest
from flask import Flask
from itsdangerous import TimestampSigner

from prroom.core.identity import (
    CallableIdentity,
    Identity,
    JoinNameIdentity,
    TokenIdentity,
    issue_token,
    with_room_rule,
)
from prroom.core.protocol import ProtocolError

SECRET = "unit-secret"


def code_of(call, *args):
    with pytest.raises(ProtocolError) as info:
        call(*args)
    return info.value.code


def test_join_name_identity_uses_the_claimed_name():
    policy = JoinNameIdentity()
    assert policy.authenticate({}, None) is None
    assert policy.name_for_join(None, "alice", 1) == "alice"
    assert code_of(policy.name_for_join, None, None, 1) == "missing-field"
    assert policy.can_join(None, 1)


def test_token_round_trip_with_and_without_scope():
    policy = TokenIdentity(SECRET, max_age=60)
    alice = policy.authenticate({}, {"token": issue_token(SECRET, "alice")})
    assert alice is not None
    assert alice._replace(expires_at=None) == Identity("alice")
    # the connection may live as long as the token could connect: until the whole seconds
    # since signing exceed max_age
    assert alice.expires_at is not None and \
        time.time() + 60 <= alice.expires_at <= time.time() + 61
    scoped = policy.authenticate({}, {"token": issue_token(SECRET, "bob", [3, 1, 3])})
    assert scoped is not None
    assert scoped._replace(expires_at=None) == Identity("bob", frozenset({1, 3}))
    assert policy.can_join(scoped, 3) and not policy.can_join(scoped, 2)


@pytest.mark.parametrize("auth", [None, {}, {"token": ""}, {"token": 5}, "token",
                                  {"token": "not.a.token"}])
def test_missing_or_malformed_tokens_are_unauthorized(auth):
    assert code_of(TokenIdentity(SECRET, 60).authenticate, {}, auth) == "unauthorized"


def test_token_signed_with_another_secret_is_refused():
    token = issue_token("other-secret", "alice")
    assert code_of(TokenIdentity(SECRET, 60).authenticate, {}, {"token": token}) == \
        "unauthorized"


def test_expired_token_is_refused(monkeypatch):
    token = issue_token(SECRET, "alice")
    later = time.time() + 120
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(ProtocolError) as info:
        TokenIdentity(SECRET, max_age=60).authenticate({}, {"token": token})
    assert info.value.code == "unauthorized" and "expired" in info.value.message


def test_authenticated_name_wins_and_other_claims_are_refused():
    policy = TokenIdentity(SECRET, 60)
    alice = Identity("alice")
    assert policy.name_for_join(alice, None, 1) == "alice"
    assert policy.name_for_join(alice, "alice", 1) == "alice"
    assert code_of(policy.name_for_join, alice, "bob", 1) == "identity-mismatch"


def test_callable_identity_runs_in_a_request_context_with_cookies():
    app = Flask(__name__)
    seen = {}

    def authenticate(auth, request):
        seen["cookie"] = request.cookies.get("who")
        return request.cookies.get("who") or None

    policy = CallableIdentity(authenticate, app.request_context)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/socket.io/", "SERVER_NAME": "x",
               "SERVER_PORT": "80", "wsgi.url_scheme": "http", "HTTP_COOKIE": "who=carol"}
    assert policy.authenticate(environ, None) == Identity("carol")
    environ["HTTP_COOKIE"] = ""
    assert code_of(policy.authenticate, environ, None) == "unauthorized"


def test_host_room_rule_narrows_the_token_scope():
    policy = with_room_rule(TokenIdentity(SECRET, 60), lambda identity, pr: pr % 2 == 1)
    anywhere = Identity("alice")
    assert policy.can_join(anywhere, 1) and not policy.can_join(anywhere, 2)
    scoped = Identity("bob", frozenset({2, 3}))
    assert policy.can_join(scoped, 3) and not policy.can_join(scoped, 1)


def test_a_revoked_identity_s_earlier_tokens_are_refused_and_later_ones_accepted(monkeypatch):
    policy = TokenIdentity(SECRET, max_age=60)
    old = issue_token(SECRET, "alice")
    other = issue_token(SECRET, "bob")
    policy.revoke("alice", time.time())
    assert code_of(policy.authenticate, {}, {"token": old}) == "identity-revoked"
    assert policy.authenticate({}, {"token": other}) == Identity("bob", None, ANY)
    # a token signed after the revocation (timestamps are whole seconds: two later)
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: int(time.time()) + 2)
    later = issue_token(SECRET, "alice")
    assert policy.authenticate({}, {"token": later}) == Identity("alice", None, ANY)
    # revocations older than max_age are forgotten: every token they refused has expired
    policy.revoke("carol", time.time() - 120)
    policy.revoke("dave", time.time())
    assert set(policy._revoked) == {"alice", "dave"}
