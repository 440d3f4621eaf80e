"""Command-line helpers, as a Flask CLI group: ``flask --app prroom prroom ...``.

Registered on the app by :class:`~prroom.extension.PRRoom`, so a host app gets them too
(``flask --app yourapp prroom issue-token alice``).
"""
from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

commands = AppGroup("prroom", help="prroom: pull request chat rooms.")


@commands.command("issue-token")
@click.argument("username")
@click.option("--pr", "pull_requests", type=int, multiple=True,
              help="Limit the token to this pull request id (repeatable); default: any.")
def issue_token_command(username, pull_requests):
    """Print a signed connection token for USERNAME (PRROOM_AUTH_MODE=token).

    It is valid for PRROOM_TOKEN_MAX_AGE seconds. Example:
    flask --app prroom prroom issue-token alice --pr 123
    """
    extension = current_app.extensions["prroom"]
    click.echo(extension.issue_token(username, pull_requests or None))
