"""Smoke test of an installed prroom wheel, run by tools/check-release in a fresh venv.

    python tools/release_smoke.py CHECKOUT SDIST

Run from outside the checkout with the fresh environment's python: it checks that prroom is
imported from that environment, that every file of the checkout's package (modules, the chat
page's templates and static files, ``py.typed``) is in the wheel and in the sdist, and that
the console script answers ``--version`` with the checkout's version and passes
``check-config --no-traps``, and that ``prroom serve`` answers /healthz and serves the chat
page with every script and stylesheet it links to.  Uses the standard library only.
"""
from __future__ import annotations

import ast
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import List, Set


def fail(message: str) -> None:
    """Stop with one line saying what is wrong."""
    sys.exit(f"release smoke test: {message}")


def package_files(checkout: Path) -> Set[str]:
    """The package's files in the checkout (relative to it), as git tracks them."""
    listed = subprocess.run(["git", "ls-files", "prroom"], cwd=checkout, capture_output=True,
                            text=True, check=True).stdout.split()
    return {name for name in listed if "__pycache__" not in name}


def checkout_version(checkout: Path) -> str:
    """``__version__`` as prroom/__init__.py writes it."""
    tree = ast.parse((checkout / "prroom" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets):
            return str(ast.literal_eval(node.value))
    fail("prroom/__init__.py has no __version__")
    return ""


def run(argv: List[str]) -> str:
    """The command's output; fails on a non-zero exit."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        fail(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def get(url: str) -> str:
    """The body of a 200 answer to GET ``url``; fails otherwise."""
    with urllib.request.urlopen(url, timeout=10) as response:
        if response.status != 200:
            fail(f"GET {url} answered {response.status}")
        return response.read().decode()


def serve_and_fetch_the_chat_page() -> None:
    """``prroom serve`` on a free loopback port: /healthz, the chat page and its assets."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(["prroom", "serve", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get(base + "/healthz")
                break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None or time.monotonic() > deadline:
                    fail(f"prroom serve did not answer /healthz: {server.communicate()[1]}")
                time.sleep(0.2)
        page = get(base + "/pr/1")
        assets = re.findall(r'(?:src|href)="(/prroom-static/[^"]+)"', page)
        if not any(".js" in a for a in assets) or not any(".css" in a for a in assets):
            fail(f"the chat page links no script or stylesheet of its own: {assets}")
        for asset in assets:
            get(base + asset.replace("&amp;", "&"))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> None:
    """Check the installed wheel and the sdist against the checkout."""
    checkout, sdist = Path(sys.argv[1]), Path(sys.argv[2])
    import prroom  # the installed one, or the check below fails

    installed = Path(prroom.__file__).resolve().parent
    purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
    if installed.parent != purelib:
        fail(f"imported prroom from {installed}, not from the fresh environment ({purelib})")
    expected = package_files(checkout)
    in_wheel = {str(p.relative_to(installed.parent)) for p in installed.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}
    missing = sorted(expected - in_wheel)
    if missing:
        fail(f"the wheel lacks {missing}")
    kinds = {Path(name).suffix for name in in_wheel if "/static/" in name}
    if not {".js", ".css"} <= kinds or "prroom/py.typed" not in in_wheel or not any(
            "/templates/" in name for name in in_wheel):
        fail(f"the wheel's package data is incomplete: {sorted(in_wheel)}")
    with tarfile.open(sdist) as archive:
        top = archive.getnames()[0].split("/")[0]
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    missing = sorted(expected - in_sdist)
    if missing:
        fail(f"the sdist {top} lacks {missing}")

    version = checkout_version(checkout)
    if prroom.__version__ != version:
        fail(f"installed version {prroom.__version__}, the checkout says {version}")
    said = run(["prroom", "--version"]).strip()
    if said != f"prroom, version {version}":
        fail(f"prroom --version said {said!r}")
    run(["prroom", "check-config", "--no-traps"])
    serve_and_fetch_the_chat_page()
    print(f"release smoke test: prroom {version}: {len(in_wheel)} files in the wheel, "
          f"{len(in_sdist)} in the sdist; --version, check-config and serve pass")


if __name__ == "__main__":
    main()
