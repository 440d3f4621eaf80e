"""Who a connection is, and which rooms it may enter.

The event handlers never decide who somebody is; they ask an :class:`IdentityPolicy`,
chosen by ``PRROOM_AUTH_MODE``:

- ``none`` (:class:`JoinNameIdentity`): a socket is whoever it says it is at join.  For local
  development only.
- ``token`` (:class:`TokenIdentity`): the client sends a short-lived token signed with the
  app's secret in the Socket.IO ``auth`` payload; see :func:`issue_token`.
- ``custom`` (:class:`CallableIdentity`): a callable of the host app decides, inside a Flask
  request context built from the connection's request (cookies, headers, Flask-Login).

Tokens are signed with itsdangerous (Flask's own signing library, already installed with
Flask, the scheme its session cookie uses): no new dependency, and the issuer is the host
Flask app or prroom's CLI.  JWT would only pay off for non-Python issuers.
"""
from __future__ import annotations

import math
import time
from typing import (
    Any,
    Callable,
    ContextManager,
    Dict,
    FrozenSet,
    Iterable,
    Mapping,
    NamedTuple,
    Optional,
)

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from prroom.core.protocol import ErrorCode, ProtocolError

TOKEN_SALT = "prroom-token"


class Identity(NamedTuple):
    """An authenticated user: the name they speak with, the rooms they may join, and until
    when the connection may stay open."""

    name: str
    # None: any pull request (subject to the host app's can_join); else only these ids.
    pull_requests: Optional[FrozenSet[int]] = None
    #: Unix time after which the connection is closed (``token-expired``); None: never.
    #: A token's is its signing time plus ``PRROOM_TOKEN_MAX_AGE``; a ``custom``
    #: authenticator may set one (e.g. its session's end).
    expires_at: Optional[float] = None


def _unauthorized(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.UNAUTHORIZED, message)


class IdentityPolicy:
    """Interface: identify a connection at connect, then authorize and name it per room."""

    #: True when connections carry an identity (the join ``username`` may then be omitted).
    authenticates = True

    def authenticate(self, environ: Mapping[str, Any], auth: Any) -> Optional[Identity]:
        """Return the connection's identity (None: anonymous) or raise ProtocolError."""
        raise NotImplementedError

    def can_join(self, identity: Optional[Identity], pull_request_id: int) -> bool:
        """Whether this identity may enter the room; by default its token scope decides."""
        if identity is None or identity.pull_requests is None:
            return True
        return pull_request_id in identity.pull_requests

    def name_for_join(self, identity: Optional[Identity], claimed: Optional[str],
                      pull_request_id: int) -> str:
        """The name the socket speaks with in the room: its identity's, or the claimed one."""
        if identity is None:
            if claimed is None:
                raise ProtocolError(ErrorCode.MISSING_FIELD, "'username' is required",
                                    field="username")
            return claimed
        if claimed is not None and claimed != identity.name:
            raise ProtocolError(ErrorCode.IDENTITY_MISMATCH,
                                f"this connection is authenticated as {identity.name!r}, "
                                f"not {claimed!r}", pullRequestId=pull_request_id)
        return identity.name


class JoinNameIdentity(IdentityPolicy):
    """``none``: every connection is anonymous; the name given at join is the name."""

    authenticates = False

    def authenticate(self, environ: Mapping[str, Any], auth: Any) -> Optional[Identity]:
        """Accept everybody, anonymously."""
        return None


class TokenIdentity(IdentityPolicy):
    """``token``: ``auth = {token}`` must be a valid, unexpired token from :func:`issue_token`."""

    def __init__(self, secret_key: str, max_age: float) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt=TOKEN_SALT)
        self.max_age = max_age
        self._revoked: Dict[str, float] = {}  # name -> tokens signed until then are refused

    def revoke(self, name: str, at: float) -> None:
        """Refuse ``name``'s tokens signed at or before ``at`` (a disconnected identity)."""
        # a revocation older than max_age refuses nothing any more: every token it would
        # refuse has expired anyway
        cutoff = time.time() - self.max_age
        for old in [key for key, when in self._revoked.items() if when < cutoff]:
            del self._revoked[old]
        self._revoked[name] = max(at, self._revoked.get(name, at))

    def authenticate(self, environ: Mapping[str, Any], auth: Any) -> Optional[Identity]:
        """Verify the token; refuse a missing, forged or expired one (``unauthorized``)."""
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            raise _unauthorized("a token is required: connect with auth: {token: '...'}")
        try:
            # itsdangerous compares the age with max_age; a float works though typed int
            claims, signed_at = self._serializer.loads(
                token, max_age=self.max_age, return_timestamp=True)  # type: ignore[arg-type]
        except SignatureExpired:
            raise _unauthorized("the token has expired; get a new one") from None
        except BadSignature:
            raise _unauthorized("the token is not valid") from None
        identity = identity_from_claims(claims)
        signed = signed_at.timestamp()
        revoked = self._revoked.get(identity.name)
        if revoked is not None and signed <= revoked:
            # (token timestamps are whole seconds: one signed in the revocation's second
            # is refused too; the client gets another a second later)
            raise ProtocolError(ErrorCode.IDENTITY_REVOKED,
                                "this identity was disconnected by an operator; get a new "
                                "token") from None
        # the connection lives as long as its token would let it connect: itsdangerous
        # refuses it once the whole seconds since signing exceed max_age
        return identity._replace(expires_at=math.floor(signed + self.max_age) + 1)


class CallableIdentity(IdentityPolicy):
    """``custom``: the host app's ``authenticate(auth, request)`` decides.

    It runs inside a Flask request context made from the connection's request, so
    ``flask.session``, cookies and Flask-Login's ``current_user`` work.  It returns a username,
    an :class:`Identity`, or None / False to refuse the connection.
    """

    def __init__(self, authenticate: Callable[[Any, Any], Any],
                 request_context: Callable[[Any], ContextManager[Any]]) -> None:
        self._authenticate = authenticate
        self._request_context = request_context

    def authenticate(self, environ: Mapping[str, Any], auth: Any) -> Optional[Identity]:
        """Call the host app's function; anything but a name or Identity refuses."""
        # request_context(environ) is the host's ``app.request_context``: entering it pushes
        # the context (session, current_user) and gives the context, whose .request is it.
        with self._request_context(environ) as context:
            result = self._authenticate(auth, context.request)
        if isinstance(result, Identity):
            return result
        if isinstance(result, str) and result:
            return Identity(result)
        raise _unauthorized("authentication failed")


def issue_token(secret_key: str, username: str,
                pull_requests: Optional[Iterable[int]] = None) -> str:
    """A signed token naming ``username``, optionally limited to some pull request ids.

    Its lifetime is checked on connect against ``PRROOM_TOKEN_MAX_AGE``.
    """
    claims: Dict[str, Any] = {"u": username}
    if pull_requests is not None:
        claims["p"] = sorted(set(int(pr) for pr in pull_requests))
    return URLSafeTimedSerializer(secret_key, salt=TOKEN_SALT).dumps(claims)


def identity_from_claims(claims: Any) -> Identity:
    """Validate a verified token's claims (a signed token can still be malformed)."""
    if not isinstance(claims, dict) or not isinstance(claims.get("u"), str) or not claims["u"]:
        raise _unauthorized("the token is not valid")
    scope = claims.get("p")
    if scope is None:
        return Identity(claims["u"])
    if not isinstance(scope, list) or not all(type(pr) is int for pr in scope):
        raise _unauthorized("the token is not valid")
    return Identity(claims["u"], frozenset(scope))


def with_room_rule(policy: IdentityPolicy,
                   can_join: Callable[[Optional[Identity], int], bool]) -> IdentityPolicy:
    """Add the host app's ``can_join(identity, pull_request_id)`` on top of a policy's own."""
    base = policy.can_join

    def combined(identity: Optional[Identity], pull_request_id: int) -> bool:
        return base(identity, pull_request_id) and bool(can_join(identity, pull_request_id))

    policy.can_join = combined  # type: ignore[method-assign]
    return policy
