"""The chat page in Debian's chromium, driven by Playwright (python): the browser, the page
object (what a person sees and does) and the factory that opens pages.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``, or ``PRROOM_TEST_CHROMIUM``
naming another; Playwright's own browser download is not used, so ``playwright install`` is
not needed) and the npm copy of socket.io-client (``npm ci --prefix tests/node``), which the
server under test serves through ``PRROOM_SOCKETIO_CLIENT_FILE`` instead of the CDN.  Without
them the browser tests fail with instructions: they do not skip by themselves, so a run
cannot silently stop checking the page.  Only ``tools/run-tests``, when it could not install
chromium, has them skip, saying why (``PRROOM_TEST_SKIP_BROWSER``).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    FrameLocator,
    Locator,
    Page,
    expect,
    sync_playwright,
)

from tests.support.servers import ROOT, free_port

CHROMIUM = Path(os.environ.get("PRROOM_TEST_CHROMIUM", "/usr/bin/chromium"))
SKIP_REASON = os.environ.get("PRROOM_TEST_SKIP_BROWSER", "")
# The flags this environment needs; Playwright adds --headless=... and a fresh temporary
# profile (user-data-dir) of its own on every launch.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
CLIENT_FILE = ROOT / "tests" / "node" / "node_modules" / "socket.io-client" / "dist" / \
    "socket.io.min.js"
# Typing indicators expire after a second, so the idle/expiry checks stay quick.
TYPING_TIMEOUT = 1.0
#: Where the embedding test serves its host page (http://127.0.0.1:<port>, an origin the chat
#: server lists; http://localhost:<port> is the same page on an origin it does not list).
HOST_PAGE_PORT = free_port()

SERVER_ENV = {
    "PRROOM_TYPING_TIMEOUT": str(TYPING_TIMEOUT),
    "PRROOM_SOCKETIO_CLIENT_FILE": str(CLIENT_FILE),
    # the restart test stops the server with pages connected: do not wait 10 s for them
    "PRROOM_GRACEFUL_TIMEOUT": "1",
    # messages posted over HTTP (bots) show on the page too
    "PRROOM_POST_TOKENS": "browser-test-token=ci-bot",
    # the host page of the embedding test, on an origin of its own
    "PRROOM_EMBED_FRAME_ANCESTORS": f"'self' http://127.0.0.1:{HOST_PAGE_PORT}",
}


def missing() -> List[str]:
    """What the browser tests need and this machine lacks, each with how to get it."""
    problems = []
    if not CHROMIUM.exists():
        problems.append(f"{CHROMIUM} not found: install Debian's chromium "
                        "(apt-get update && apt-get install -y chromium)")
    if not CLIENT_FILE.is_file():
        problems.append(f"{CLIENT_FILE.relative_to(ROOT)} not found: run "
                        "`npm ci --prefix tests/node`")
    return problems


@contextmanager
def chromium() -> Iterator[Browser]:
    """One headless chromium; each page opened in it gets a context (storage) of its own."""
    expect.set_options(timeout=10_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()

# Errors the browser logs by itself while the server is away (the restart test).
CONNECTION_NOISE = ("WebSocket connection to", "net::ERR_CONNECTION_REFUSED",
                    "Failed to load resource")


class ChatPage:
    """One person's chat page (or the chat inside an iframe of a host page)."""

    def __init__(self, page: Page, base_url: str, pull_request_id: int,
                 frame: Optional[FrameLocator] = None) -> None:
        self.page = page
        self.base_url = base_url
        self.pull_request_id = pull_request_id
        self.root = frame or page
        self.errors: List[str] = []
        self.dialogs: List[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        page.on("dialog", self._dialog)

    @classmethod
    def open(cls, browser: Browser, base_url: str, pull_request_id: int,
             path: Optional[str] = None, **options: Any) -> "ChatPage":
        """A new browser context (own storage) showing ``{base_url}/pr/{id}`` (or ``path``)."""
        options.setdefault("viewport", {"width": 760, "height": 560})
        options.setdefault("locale", "en-US")
        options.setdefault("timezone_id", "Europe/Amsterdam")
        context = browser.new_context(**options)
        page = context.new_page()
        chat = cls(page, base_url, pull_request_id)
        page.goto(base_url + (path or f"/pr/{pull_request_id}"))
        return chat

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    # -- locators -----------------------------------------------------------------------

    def q(self, selector: str) -> Locator:
        """A locator inside the chat (the page, or the iframe's document)."""
        return self.root.locator(selector)

    @property
    def status(self) -> Locator:
        """The connection status line."""
        return self.q("#status")

    @property
    def typing(self) -> Locator:
        """The "… is typing" line."""
        return self.q("#typing")

    @property
    def input(self) -> Locator:
        """The message box."""
        return self.q("#message-input")

    @property
    def send_error(self) -> Locator:
        """Where the page explains why a message was not sent."""
        return self.q("#send-error")

    @property
    def message_items(self) -> Locator:
        """The messages shown."""
        return self.q("#messages li.message")

    @property
    def member_items(self) -> Locator:
        """The member list's entries."""
        return self.q("#members li")

    # -- actions ------------------------------------------------------------------------

    def join_as(self, name: str) -> "ChatPage":
        """Type a name in the name form, press Enter, wait until the room is joined."""
        self.q("#name-input").fill(name)
        self.q("#name-input").press("Enter")
        self.expect_state("connected")
        expect(self.q("#me-name")).to_have_text(name)
        return self

    def say(self, text: str) -> None:
        """Type a message (key by key, as a person does) and press Enter."""
        self.input.press_sequentially(text, delay=10)
        self.input.press("Enter")

    def expect_state(self, state: str, timeout: float = 10_000) -> None:
        expect(self.status).to_have_attribute("data-state", state, timeout=timeout)

    def expect_message(self, author: str, text: str, timeout: float = 10_000) -> None:
        """The last message shown is ``text`` by ``author``."""
        last = self.message_items.last
        expect(last.locator(".text")).to_have_text(text, timeout=timeout)
        expect(last.locator(".author")).to_have_text(author)

    # -- what is shown ------------------------------------------------------------------

    def messages(self) -> List[Tuple[str, str, str]]:
        """``(author, time, text)`` of every message shown, oldest first."""
        return [(item.locator(".author").inner_text(), item.locator("time").inner_text(),
                 item.locator(".text").inner_text())
                for item in self.message_items.all()]

    def members(self) -> List[str]:
        """Names in the member list (without the " (you)" mark)."""
        return [name.strip() for name in self.q("#members li").evaluate_all(
            "items => items.map(li => li.firstChild.textContent)")]

    def unexpected_errors(self, allow: Tuple[str, ...] = ()) -> List[str]:
        """Console and script errors so far, but those containing one of ``allow``."""
        return [error for error in self.errors if not any(part in error for part in allow)]

    def screenshot(self, path: Optional[Path]) -> bytes:
        """A PNG of the page, also saved at ``path``."""
        return self.page.screenshot(path=str(path) if path else None)

    def close(self) -> None:
        """Close the page and its browser context."""
        self.page.context.close()


class Pages:
    """The page factory: ``open_page(pr_id, path=None, server=None, **context_options)``.

    Every page is a separate browser context: its own localStorage, like another person.
    Closes every page it opened at the end of the ``with``.
    """

    def __init__(self, browser: Browser, server: Any) -> None:
        self.browser = browser
        self.server = server
        self.opened: List[ChatPage] = []

    def __call__(self, pull_request_id: int, path: Optional[str] = None, server: Any = None,
                 **options: Any) -> ChatPage:
        page = ChatPage.open(self.browser, (server or self.server).url, pull_request_id,
                             path=path, **options)
        self.opened.append(page)
        return page

    def close(self) -> None:
        """Close every page opened so far."""
        while self.opened:
            self.opened.pop().close()

    def __enter__(self) -> "Pages":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


@contextmanager
def serving_page(port: int, body: str) -> Iterator[None]:
    """``body`` as the HTML answer to every GET on ``port`` (loopback), for the ``with``."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
