"""prroom: real-time chat rooms attached to pull requests, served over Socket.IO.

Public API: :class:`PRRoom` (the Flask extension), :func:`create_app` (the standalone
server), :func:`post_message` (post to a room from any process) and :func:`issue_token`
(a connection token for ``PRROOM_AUTH_MODE=token``, from any app sharing the key).  They
are imported on first use so that ``import prroom.<module>`` stays light: ``python -m
prroom`` must apply gevent's monkey-patching before Flask and the Socket.IO stack are
imported.
"""
from typing import TYPE_CHECKING

#: The release's version: the only place it is written (setup.cfg reads it from here, and
#: ``prroom --version`` prints it).  Each release has its entry in CHANGELOG.md.
__version__ = "0.1.0"
__all__ = ["PRRoom", "create_app", "post_message", "issue_token", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from prroom.app import create_app
    from prroom.core.identity import issue_token
    from prroom.server.extension import PRRoom
    from prroom.server.posting import post_message


def __getattr__(name: str) -> object:
    if name == "PRRoom":
        from prroom.server.extension import PRRoom
        return PRRoom
    if name == "create_app":
        from prroom.app import create_app
        return create_app
    if name == "issue_token":
        from prroom.core.identity import issue_token
        return issue_token
    if name == "post_message":
        from prroom.server.posting import post_message
        return post_message
    raise AttributeError(f"module 'prroom' has no attribute {name!r}")
