"""Servers more than one integration module uses."""
from tests.support import servers

token_server = servers.server_fixture(
    servers.TOKEN_SERVER_ENV,
    doc="Token mode (PRROOM_AUTH_MODE=token, secret TOKEN_SECRET) with small caps and limits.")
