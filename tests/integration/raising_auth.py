"""A host authenticator (``PRROOM_AUTHENTICATE``) whose backend fails: it raises."""
from typing import Any


def authenticate(auth: Any, request: Any) -> Any:
    """``{"user": name}`` is that user; ``{"boom": true}`` raises, as a host's database
    lookup does when the database is down."""
    auth = auth or {}
    if auth.get("boom"):
        raise RuntimeError("user database unreachable")
    return auth.get("user")
