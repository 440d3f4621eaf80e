"""The chat page's fixtures: chromium, its server and the page factory (tests.support.browser)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from playwright.sync_api import Browser

from tests.support import browser as chat_browser
from tests.support import servers


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless chromium for the session; fails (with how to fix it) when it cannot run."""
    problems = chat_browser.missing()
    if problems:
        pytest.fail("browser tests cannot run:\n" + "\n".join(problems), pytrace=False)
    with chat_browser.chromium() as launched:
        yield launched


chat_server = servers.server_fixture(
    chat_browser.SERVER_ENV, scope="session", after=("browser",),
    doc="prroom under gunicorn, serving the chat page with the npm socket.io-client.")


@pytest.fixture
def open_page(browser: Browser,
              chat_server: servers.ServerProcess) -> Iterator[chat_browser.Pages]:
    """The page factory: ``open_page(pr_id, path=None, server=None, **context_options)``."""
    with chat_browser.Pages(browser, chat_server) as pages:
        yield pages


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go (tests/artifacts/, git-ignored)."""
    servers.ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return servers.ARTIFACTS
