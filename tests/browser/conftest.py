"""The chat page in a real browser: Debian's chromium driven by Playwright (python).

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``; Playwright's own browser
download is not used, so ``playwright install`` is not needed) and the npm copy of
socket.io-client (``npm ci --prefix tests/node``), which the server under test serves through
``PRROOM_SOCKETIO_CLIENT_FILE`` instead of the CDN.  Without them these tests fail with
instructions; they do not skip, so CI cannot silently stop checking the page.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import servers
from tests.support.servers import ROOT

CHROMIUM = Path(os.environ.get("PRROOM_TEST_CHROMIUM", "/usr/bin/chromium"))
# The flags this environment needs; Playwright adds --headless=... and a fresh temporary
# profile (user-data-dir) of its own on every launch.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
CLIENT_FILE = ROOT / "tests" / "node" / "node_modules" / "socket.io-client" / "dist" / \
    "socket.io.min.js"
ARTIFACTS = ROOT / "tests" / "artifacts"
# Typing indicators expire after a second, so the idle/expiry checks stay quick.
TYPING_TIMEOUT = 1.0
SERVER_ENV = {
    "PRROOM_TYPING_TIMEOUT": str(TYPING_TIMEOUT),
    "PRROOM_SOCKETIO_CLIENT_FILE": str(CLIENT_FILE),
    # the restart test stops the server with pages connected: do not wait 10 s for them
    "PRROOM_GRACEFUL_TIMEOUT": "1",
    # messages posted over HTTP (bots) show on the page too
    "PRROOM_POST_TOKENS": "browser-test-token",
}


def _missing() -> list:
    problems = []
    if not CHROMIUM.exists():
        problems.append(f"{CHROMIUM} not found: install Debian's chromium "
                        "(apt-get update && apt-get install -y chromium)")
    if not CLIENT_FILE.is_file():
        problems.append(f"{CLIENT_FILE.relative_to(ROOT)} not found: run "
                        "`npm ci --prefix tests/node`")
    try:
        import playwright  # noqa: F401
    except ImportError:
        problems.append("the python package playwright is missing: pip install -e '.[test]'")
    return problems


@pytest.fixture(scope="session")
def browser():
    """One headless chromium for the session; each page gets its own context (storage)."""
    problems = _missing()
    if problems:
        pytest.fail("browser tests cannot run:\n" + "\n".join(problems), pytrace=False)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=10_000)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def chat_server(browser):
    """prroom under gunicorn, serving the chat page with the npm socket.io-client."""
    proc = servers.gunicorn(env=SERVER_ENV)
    proc.wait_ready()
    yield proc
    proc.stop()


@pytest.fixture
def open_page(browser, chat_server):
    """Factory: ``open_page(pr_id, path=None, server=None, **context_options)``.

    Every page is a separate browser context: its own localStorage, like another person.
    """
    from tests.browser.pages import ChatPage

    opened = []

    def open_chat(pull_request_id, path=None, server=None, **options):
        page = ChatPage.open(browser, (server or chat_server).url, pull_request_id,
                             path=path, **options)
        opened.append(page)
        return page

    yield open_chat
    for page in opened:
        page.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go (tests/artifacts/, git-ignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
