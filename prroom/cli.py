"""Command line: the ``prroom`` console script.

``prroom serve | check-config | issue-token | post | disconnect-identity`` work from the
environment alone (the way the server itself is configured); ``flask --app yourapp prroom
issue-token`` (:mod:`prroom.server.flask_commands`) uses a host app's own configuration.
Exit codes: 0 success, 1 the operation failed (e.g. the message queue is unreachable), 2 bad
usage or configuration.
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import click

from prroom import __version__
from prroom.core.config import (
    SERVER_SETTINGS,
    SETTINGS,
    SETTINGS_BY_KEY,
    ConfigError,
    Setting,
    Settings,
    server_settings,
    set_in_environ,
    settings_from_environ,
)


class _Exit2(click.ClickException):
    exit_code = 2


def _settings() -> Settings:
    try:
        return settings_from_environ()
    except ConfigError as error:
        raise _Exit2(str(error)) from None


def _options_of(settings: List[Setting]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One ``--<name>`` option per setting, its help and choices from its declaration."""
    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        for setting in reversed(settings):
            kind: Any = click.Choice(list(setting.choices)) if setting.choices else None
            function = click.option(f"--{setting.name.replace('_', '-')}", setting.name,
                                    type=kind, help=f"{setting.description} ({setting.key}).",
                                    )(function)
        return function
    return decorate


#: ``prroom serve``'s options: the settings declared with ``flag=True`` (config.py).
_setting_options = _options_of([s for s in SERVER_SETTINGS + SETTINGS if s.flag])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="prroom")
def main() -> None:
    """prroom: real-time chat rooms for pull requests, over Socket.IO.

    Configured by PRROOM_* environment variables (see the documentation's Configuration
    page); the options of each command override them. Exit codes: 0 ok, 1 failed, 2 bad
    usage or configuration.
    """


@main.command()
@_setting_options
def serve(**options: Optional[str]) -> None:
    """Run the production server: gunicorn, one gevent-websocket worker, prroom's settings."""
    by_name: Dict[str, Setting] = {s.name: s for s in SERVER_SETTINGS + SETTINGS}
    env = dict(os.environ)
    env.update({by_name[name].key: str(value) for name, value in options.items()
                if value is not None})
    try:
        server_settings(env)
        settings_from_environ(env)
    except ConfigError as error:
        raise _Exit2(str(error)) from None
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:prroom.gunicorn_config",
            "prroom.wsgi:app"]
    os.execve(sys.executable, argv, env)


@main.command("check-config")
@click.option("--wsgi", "wsgi_app", metavar="MODULE:APP",
              help="Also load this WSGI app as the gevent worker would (patch, then import) "
                   "and report the gevent traps in it; default: prroom's own (prroom.wsgi).")
@click.option("--no-traps", is_flag=True, help="Only the settings; load no app.")
def check_config(wsgi_app: Optional[str], no_traps: bool) -> None:
    """Print the effective configuration (secrets masked), the gevent traps found and each
    library seam's status (installed, fell back, off); exit 2 if any value is bad."""
    try:
        server = server_settings()
        app_settings = settings_from_environ()
    except ConfigError as error:
        raise _Exit2(str(error)) from None
    from_env = set_in_environ()
    for setting in SERVER_SETTINGS + SETTINGS:
        value = server[setting.name] if setting.name in server \
            else getattr(app_settings, setting.name)
        source = "env" if setting.key in from_env else "default"
        shown = _show(setting.shown(value))
        click.echo(f"{setting.key}={shown}  ({source})")
    if not no_traps:
        for line in _traps_of(wsgi_app or "prroom.wsgi:app"):
            click.echo(line)


# A fresh interpreter does what the worker does: patch first, then import the app.
_TRAP_CHECK = """
import importlib, sys
from gevent import monkey
monkey.patch_all()
module_name, _, attribute = sys.argv[1].partition(":")
module = importlib.import_module(module_name)
from prroom.internals import seams
from prroom.diagnostics.gevent_traps import find_traps
for trap in find_traps():
    print("gevent trap: " + trap)
state = getattr(getattr(module, attribute or "app", None), "extensions", {}).get("prroom")
server = state.socketio.server if state is not None else None
try:  # the worker's own seam, checked as the worker checks it at boot
    seams.apply("gunicorn-worker", lambda: True, accepted=seams.parse_accepted(
        state.settings.accept_missing if state is not None else ()))
except seams.SeamRefused:
    pass  # recorded as refused: the line below says so
for o in seams.report(server):
    print(f"seam {o.seam.name} ({o.seam.kind}, {o.seam.library} "
          f"{seams.library_version(o.seam.library)}): {o.status}"
          + (f" ({o.reason})" if o.reason else ""))
"""


def _traps_of(wsgi_app: str) -> List[str]:
    """The gevent traps and the library seams' outcomes of ``wsgi_app``, loaded as the worker
    loads it, one line each."""
    result = subprocess.run([sys.executable, "-c", _TRAP_CHECK, wsgi_app],
                            capture_output=True, text=True, cwd=os.getcwd())
    if result.returncode != 0:
        raise click.ClickException(f"could not load {wsgi_app}: "
                                   f"{result.stderr.strip().splitlines()[-1:]}")
    return [line for line in result.stdout.splitlines() if line.strip()]


def _show(value: Any) -> str:
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
def issue_token(username: str, pull_requests: Tuple[int, ...]) -> None:
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
@_options_of([SETTINGS_BY_KEY["PRROOM_MESSAGE_QUEUE"], SETTINGS_BY_KEY["PRROOM_CHANNEL"]])
def post(pull_request_id: int, username: str, message: str, message_queue: Optional[str],
         channel: Optional[str]) -> None:
    """Post MESSAGE as USERNAME to a pull request's room, through the message queue."""
    from prroom.cluster.channels import QueueUnavailable
    from prroom.core.protocol import ProtocolError
    from prroom.server.posting import PostingUnavailable, post_message

    _settings()  # a bad PRROOM_* value is a usage error (2), as for the other commands
    try:  # an option is checked as its setting would be
        if message_queue is not None:
            message_queue = SETTINGS_BY_KEY["PRROOM_MESSAGE_QUEUE"].coerce(message_queue)
        if channel is not None:
            channel = SETTINGS_BY_KEY["PRROOM_CHANNEL"].coerce(channel)
    except ConfigError as error:
        raise _Exit2(str(error)) from None
    try:
        posted = post_message(pull_request_id, username, message,
                              message_queue=message_queue, channel=channel)
    except (ProtocolError, PostingUnavailable) as error:
        raise _Exit2(str(error)) from None
    except QueueUnavailable as error:
        raise click.ClickException(str(error)) from None
    click.echo(posted["id"])


@main.command("disconnect-identity")
@click.argument("username")
@_options_of([SETTINGS_BY_KEY["PRROOM_MESSAGE_QUEUE"], SETTINGS_BY_KEY["PRROOM_CHANNEL"]])
def disconnect_identity(username: str, message_queue: Optional[str],
                        channel: Optional[str]) -> None:
    """Disconnect USERNAME's connections on every server process, through the message queue.

    Each gets pr-room-error identity-revoked; in token mode the tokens signed until now are
    refused. A server without PRROOM_MESSAGE_QUEUE is reached through its admin endpoint
    (PRROOM_ADMIN_TOKEN) instead.
    """
    from prroom.cluster.channels import QueueUnavailable
    from prroom.server.identities import publish_disconnect

    settings = _settings()
    try:
        url = SETTINGS_BY_KEY["PRROOM_MESSAGE_QUEUE"].coerce(
            message_queue if message_queue is not None else settings.message_queue)
        name = SETTINGS_BY_KEY["PRROOM_CHANNEL"].coerce(
            channel if channel is not None else settings.channel)
    except ConfigError as error:
        raise _Exit2(str(error)) from None
    if not url:
        raise _Exit2("no message queue: set PRROOM_MESSAGE_QUEUE or pass --message-queue "
                     "(a single-process server: POST /admin/disconnect-identity)")
    try:
        publish_disconnect(url, name, settings.queue_pubsub, username)
    except QueueUnavailable as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"disconnect of {username!r} published to every process")
