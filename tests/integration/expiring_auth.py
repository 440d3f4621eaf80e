"""A ``custom``-mode authenticator whose identities expire (PRROOM_AUTHENTICATE for
tests/integration/test_identity_control.py): the client names itself and its lifetime."""
import time
from typing import Any

from prroom.core.identity import Identity


def authenticate(auth: Any, request: Any) -> Identity:
    """``auth = {name, seconds}``: that name, until that many seconds from now."""
    return Identity(auth["name"], expires_at=time.time() + float(auth["seconds"]))
