"""A page object for the chat page: what a person sees and does, in Playwright terms."""
from __future__ import annotations

from typing import List, Optional, Tuple

from playwright.sync_api import Browser, FrameLocator, Page, expect

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
             path: Optional[str] = None, **options) -> "ChatPage":
        """A new browser context (own storage) showing ``{base_url}/pr/{id}`` (or ``path``)."""
        options.setdefault("viewport", {"width": 760, "height": 560})
        options.setdefault("locale", "en-US")
        options.setdefault("timezone_id", "Europe/Amsterdam")
        context = browser.new_context(**options)
        page = context.new_page()
        chat = cls(page, base_url, pull_request_id)
        page.goto(base_url + (path or f"/pr/{pull_request_id}"))
        return chat

    def _console(self, message) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    # -- locators -----------------------------------------------------------------------

    def q(self, selector: str):
        return self.root.locator(selector)

    @property
    def status(self):
        return self.q("#status")

    @property
    def typing(self):
        return self.q("#typing")

    @property
    def input(self):
        return self.q("#message-input")

    @property
    def send_error(self):
        return self.q("#send-error")

    @property
    def message_items(self):
        return self.q("#messages li.message")

    @property
    def member_items(self):
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
        return [error for error in self.errors if not any(part in error for part in allow)]

    def screenshot(self, path) -> bytes:
        return self.page.screenshot(path=str(path) if path else None)

    def close(self) -> None:
        self.page.context.close()
