"""Debian's nginx, unprivileged on loopback, running the site file the docs show (deploy/).

``deploy/nginx.conf`` is what an operator installs as ``/etc/nginx/conf.d/prroom.conf``.
:func:`localize` makes a copy for a test that differs only in its two marked places (the
``listen`` address and the upstream's ``server`` lines); :func:`directives` is how a test
proves that nothing else changed.  :class:`NginxProcess` wraps the site in the few main-level
lines Debian's own ``/etc/nginx/nginx.conf`` would supply, with its pid, logs and temporary
files in a directory of its own, so it needs no root and touches nothing of the system's.
"""
from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import pytest

from tests.support.servers import ARTIFACTS, ROOT, free_port
from tests.support.waiting import wait_until

#: The site configuration the documentation shows.
SITE_CONF = ROOT / "deploy" / "nginx.conf"

# Set by tools/run-tests when nginx is missing and it cannot install it: the deployment
# tests then skip with this reason (one line) instead of failing.
SKIP_REASON = os.environ.get("PRROOM_TEST_SKIP_NGINX", "")

Directive = Tuple[Tuple[str, ...], Tuple[str, ...]]  # (enclosing blocks, words)


def find_nginx() -> str:
    """The nginx binary (Debian installs it in /usr/sbin, often not on a user's PATH)."""
    if SKIP_REASON:
        pytest.skip(SKIP_REASON)
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    assert found, "nginx is not installed: apt-get install nginx (tools/run-tests does it)"
    return found


def directives(text: str) -> List[Directive]:
    """Every directive of an nginx configuration, with the blocks enclosing it.

    Enough of nginx's syntax for deploy/nginx.conf: comments, quoted words, ``;``, ``{``,
    ``}``.  A block's opening line is a directive too (``location /socket.io/``).
    """
    tokens = re.findall(r'"[^"]*"|\'[^\']*\'|[{};]|[^\s{};"\'#]+|#[^\n]*', text)
    found: List[Directive] = []
    blocks: List[str] = []
    words: List[str] = []
    for token in tokens:
        if token.startswith("#"):
            continue
        if token in (";", "{"):
            found.append((tuple(blocks), tuple(words)))
            if token == "{":
                blocks.append(" ".join(words))
            words = []
        elif token == "}":
            assert not words, f"unterminated directive {words} in nginx configuration"
            blocks.pop()
        else:
            words.append(token)
    assert not blocks and not words, "unbalanced nginx configuration"
    return found


def _is_instance(directive: Directive) -> bool:
    blocks, words = directive
    return bool(blocks) and blocks[-1].startswith("upstream ") and words[0] == "server"


def _is_listen(directive: Directive) -> bool:
    blocks, words = directive
    return blocks == ("server",) and words[0] == "listen"


def masked(text: str) -> List[Directive]:
    """:func:`directives`, with the marked addresses (listen, upstream servers) blanked."""
    result: List[Directive] = []
    for blocks, words in directives(text):
        if _is_instance((blocks, words)) or _is_listen((blocks, words)):
            words = (words[0], "<address>", *words[2:])
        result.append((blocks, words))
    return result


def localize(text: str, listen_port: int, upstream_ports: Sequence[int]) -> str:
    """``text`` with its listen address on loopback ``listen_port`` and its upstream's
    instances at ``upstream_ports`` (as many as it lists), nothing else changed."""
    instances = re.findall(r"^(\s*)server\s+\S+?;", text, flags=re.M)
    assert len(instances) == len(upstream_ports), (
        f"deploy/nginx.conf lists {len(instances)} instances, the test runs "
        f"{len(upstream_ports)}")
    ports = iter(upstream_ports)
    text = re.sub(r"^(\s*)server\s+\S+?;",
                  lambda m: f"{m.group(1)}server 127.0.0.1:{next(ports)};", text, flags=re.M)
    text, listens = re.subn(r"^(\s*)listen\s+[^;]+;", rf"\g<1>listen 127.0.0.1:{listen_port};",
                            text, flags=re.M)
    assert listens == 1, "deploy/nginx.conf must have exactly one listen line"
    return text


# What Debian's /etc/nginx/nginx.conf supplies around conf.d/*.conf, in a private directory.
_MAIN = """\
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/prroom.conf;
}}
"""


class NginxProcess:
    """nginx serving ``site`` (a localized deploy/nginx.conf) on loopback ``port``."""

    def __init__(self, site: str, port: int) -> None:
        self.binary = find_nginx()
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        # in /tmp, which any user may reach: under root the process runs as nobody
        self.dir = Path(tempfile.mkdtemp(prefix="prroom-nginx-"))
        (self.dir / "prroom.conf").write_text(site)
        (self.dir / "nginx.conf").write_text(_MAIN.format(dir=self.dir))
        user = {}
        if os.geteuid() == 0:  # nginx needs no privilege: drop it, as a user would run it
            nobody = pwd.getpwnam("nobody")
            for path in (self.dir, *self.dir.iterdir()):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
            user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        self.proc: Optional[subprocess.Popen] = subprocess.Popen(
            [self.binary, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
            **user)  # type: ignore[call-overload]

        def listening() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return True
            except OSError:
                return False  # not listening yet

        try:
            if not wait_until(listening, timeout=10):
                raise RuntimeError(f"nginx not listening after 10 s:\n{self.log()}")
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        """nginx's error log so far (tests/artifacts/nginx-PORT.log once stopped)."""
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """SIGQUIT (nginx's graceful stop), then SIGKILL after 10 s.  Idempotent."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self.dir.exists():  # its log stays with the servers' (tests/artifacts)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            (ARTIFACTS / f"nginx-{self.port}.log").write_text(self.log())
            shutil.rmtree(self.dir, ignore_errors=True)


def running_site(upstream_ports: Sequence[int]) -> Tuple[NginxProcess, str]:
    """nginx running deploy/nginx.conf in front of ``upstream_ports``, and the site text it
    runs (for the test to compare with the original)."""
    port = free_port()
    site = localize(SITE_CONF.read_text(), port, upstream_ports)
    return NginxProcess(site, port), site
