"""Where a socket's name comes from.

The event handlers never decide who somebody is; they ask an :class:`IdentityPolicy`.
Today's policy, :class:`JoinNameIdentity`, trusts the name given at join.  A policy based on
signed tokens or the host app's Flask session replaces it by implementing the same two
methods, without touching the handlers.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from .protocol import ErrorCode, ProtocolError


class IdentityPolicy:
    """Interface: how a connection is identified and which name it may join a room with."""

    def authenticate(self, environ: Mapping[str, Any], auth: Any) -> Optional[str]:
        """Called on connect with the WSGI environ and the Socket.IO ``auth`` payload.

        Return the authenticated identity (a username), None for an anonymous connection,
        or raise :class:`~prroom.protocol.ProtocolError` to refuse the connection.
        """
        raise NotImplementedError

    def name_for_join(self, identity: Optional[str], claimed: str,
                      pull_request_id: int) -> str:
        """Return the name the socket will speak with in the room, or raise ProtocolError."""
        raise NotImplementedError


class JoinNameIdentity(IdentityPolicy):
    """Development-grade identity: a socket is whoever it says it is when it joins a room.

    The name is then fixed for that room: later sends and typing events must carry it.
    """

    def authenticate(self, environ: Mapping[str, Any], auth: Any) -> Optional[str]:
        """Every connection is accepted anonymously."""
        return None

    def name_for_join(self, identity: Optional[str], claimed: str,
                      pull_request_id: int) -> str:
        """The claimed name, unless the connection was authenticated as somebody else."""
        if identity is not None and identity != claimed:
            raise ProtocolError(ErrorCode.IDENTITY_MISMATCH,
                                f"this connection is authenticated as {identity!r}, "
                                f"not {claimed!r}", pullRequestId=pull_request_id)
        return claimed
