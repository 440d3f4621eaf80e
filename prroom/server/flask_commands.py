"""``flask --app yourapp prroom ...``: prroom's commands inside a host app's Flask CLI.

They use the host app's own configuration (the ``prroom`` console script, :mod:`prroom.cli`,
works from the environment alone).
"""
from __future__ import annotations

from typing import Tuple

import click
from flask import current_app
from flask.cli import AppGroup

commands = AppGroup("prroom", help="prroom: pull request chat rooms.")


@commands.command("issue-token")
@click.argument("username")
@click.option("--pr", "pull_requests", type=int, multiple=True,
              help="Limit the token to this pull request id (repeatable); default: any.")
def issue_token_command(username: str, pull_requests: Tuple[int, ...]) -> None:
    """Print a signed connection token for USERNAME (PRROOM_AUTH_MODE=token).

    It is valid for PRROOM_TOKEN_MAX_AGE seconds. Example:
    flask --app prroom prroom issue-token alice --pr 123
    """
    state = current_app.extensions["prroom"]
    click.echo(state.issue_token(username, pull_requests or None))


@commands.command("disconnect-identity")
@click.argument("username")
def disconnect_identity_command(username: str) -> None:
    """Disconnect USERNAME on every server process of the app's deployment, through its
    PRROOM_MESSAGE_QUEUE (a single-process server: POST /admin/disconnect-identity)."""
    from prroom.cluster.channels import QueueUnavailable
    from prroom.server.identities import publish_disconnect

    settings = current_app.extensions["prroom"].settings
    if not settings.message_queue:
        raise click.UsageError("PRROOM_MESSAGE_QUEUE is not set: no other process to reach")
    try:
        publish_disconnect(settings.message_queue, settings.channel, settings.queue_pubsub,
                           username)
    except QueueUnavailable as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"disconnect of {username!r} published to every process")
