"""Command line: the ``prroom`` console script and the ``flask prroom`` command group.

``prroom serve | check-config | issue-token | post`` work from the environment alone (the
way the server itself is configured); ``flask --app yourapp prroom issue-token`` uses a host
app's own configuration.  Exit codes: 0 success, 1 the operation failed (e.g. the message
queue is unreachable), 2 bad usage or configuration.
"""
from __future__ import annotations

import os
import sys

import click

from prroom.core.config import (
    DEFAULTS,
    SERVER_SETTINGS,
    SETTINGS,
    ConfigError,
    Settings,
    from_environ,
    server_settings,
)

# -- the prroom console script ------------------------------------------------------------

def _settings() -> Settings:
    try:
        return Settings.from_mapping({**DEFAULTS, **from_environ()})
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


class _Exit2(click.ClickException):
    exit_code = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="prroom")
def main():
    """prroom: real-time chat rooms for pull requests, over Socket.IO.

    Configured by PRROOM_* environment variables (see README); the options of each
    command override them. Exit codes: 0 ok, 1 failed, 2 bad usage or configuration.
    """


@main.command()
@click.option("--host", help="Address to listen on (PRROOM_HOST).")
@click.option("--port", type=int, help="Port to listen on (PRROOM_PORT).")
@click.option("--bind", help="Full gunicorn bind, e.g. unix:/run/prroom.sock (PRROOM_BIND).")
@click.option("--worker-connections", type=int,
              help="Simultaneous connections (PRROOM_WORKER_CONNECTIONS).")
@click.option("--log-level", help="debug, info, warning, error (PRROOM_LOG_LEVEL).")
@click.option("--log-format", type=click.Choice(["text", "json"]),
              help="Log line format (PRROOM_LOG_FORMAT).")
@click.option("--message-queue", help="Redis URL for clustered mode (PRROOM_MESSAGE_QUEUE).")
def serve(host, port, bind, worker_connections, log_level, log_format, message_queue):
    """Run the production server: gunicorn, one gevent-websocket worker, prroom's settings."""
    overrides = {"PRROOM_HOST": host, "PRROOM_PORT": port, "PRROOM_BIND": bind,
                 "PRROOM_WORKER_CONNECTIONS": worker_connections,
                 "PRROOM_LOG_LEVEL": log_level, "PRROOM_LOG_FORMAT": log_format,
                 "PRROOM_MESSAGE_QUEUE": message_queue}
    env = dict(os.environ)
    env.update({key: str(value) for key, value in overrides.items() if value is not None})
    try:
        server_settings(env)
        Settings.from_mapping({**DEFAULTS, **from_environ(env)})
    except ConfigError as error:
        raise _Exit2(str(error)) from None
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:prroom.gunicorn_config",
            "prroom.wsgi:app"]
    os.execve(sys.executable, argv, env)


@main.command("check-config")
def check_config():
    """Print the effective configuration (secrets masked); exit 2 if any value is bad."""
    try:
        server = server_settings()
        app_settings = Settings.from_mapping({**DEFAULTS, **from_environ()})
    except ConfigError as error:
        raise _Exit2(str(error)) from None
    for setting in SERVER_SETTINGS + SETTINGS:
        name = setting.key[len("PRROOM_"):].lower()
        value = server[name] if name in server else getattr(app_settings, name)
        source = "env" if setting.key in os.environ else "default"
        shown = "********" if setting.secret and value else _show(value)
        click.echo(f"{setting.key}={shown}  ({source})")


def _show(value) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return ",".join(value)
    if callable(value):
        return f"{value.__module__}:{value.__qualname__}"
    return str(value)


@main.command("issue-token")
@click.argument("username")
@click.option("--pr", "pull_requests", type=int, multiple=True,
              help="Limit the token to this pull request id (repeatable); default: any.")
def issue_token(username, pull_requests):
    """Print a connection token for USERNAME, signed with PRROOM_SECRET_KEY."""
    from prroom.core.identity import issue_token as sign

    settings = _settings()
    if not settings.secret_key:
        raise _Exit2("PRROOM_SECRET_KEY is not set: it signs the tokens")
    click.echo(sign(settings.secret_key, username, pull_requests or None))


@main.command()
@click.argument("pull_request_id", type=int)
@click.argument("username")
@click.argument("message")
@click.option("--message-queue", help="Redis URL (default: PRROOM_MESSAGE_QUEUE).")
@click.option("--channel", help="Deployment channel (default: PRROOM_CHANNEL).")
def post(pull_request_id, username, message, message_queue, channel):
    """Post MESSAGE as USERNAME to a pull request's room, through the message queue."""
    from prroom.core.protocol import ProtocolError
    from prroom.internals.managers import QueueUnavailable
    from prroom.server.posting import PostingUnavailable, post_message

    try:
        posted = post_message(pull_request_id, username, message,
                              message_queue=message_queue, channel=channel)
    except (ProtocolError, PostingUnavailable) as error:
        raise _Exit2(str(error)) from None
    except QueueUnavailable as error:
        raise click.ClickException(str(error)) from None
    click.echo(posted["id"])
