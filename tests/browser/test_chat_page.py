"""The chat page (``GET /pr/<id>``) in headless chromium against the real gunicorn server."""
from __future__ import annotations

import base64
import contextlib
import json
import re

import pytest
import requests
from playwright.sync_api import expect

from tests.support import browser as chat_browser
from tests.support import servers
from tests.support.browser import CONNECTION_NOISE, SERVER_ENV, ChatPage
from tests.support.waiting import wait_until

if chat_browser.SKIP_REASON:  # set by tools/run-tests only, when it could not get chromium
    pytest.skip(chat_browser.SKIP_REASON, allow_module_level=True)

pytestmark = pytest.mark.integration

TIME = re.compile(r"^\d{1,2}:\d{2}(\s?[AP]M)?$")


def test_two_people_talk_and_a_third_room_hears_nothing(open_page, pr_id, artifacts):
    alice, bob = open_page(pr_id), open_page(pr_id)
    carol = open_page(pr_id + 1)
    alice.join_as("alice")
    bob.join_as("bob")
    carol.join_as("carol")

    # alice types: bob sees it, alice does not see herself typing
    alice.input.press_sequentially("Looks", delay=30)
    expect(bob.typing).to_have_text("alice is typing…")
    expect(alice.typing).to_have_text("")
    # ... and stops: the indicator goes away by itself (idle stop-typing / server expiry)
    expect(bob.typing).to_have_text("", timeout=6_000)

    # typing again, then Enter: the message reaches both and ends the indicator
    alice.input.press_sequentially(" good to me", delay=30)
    expect(bob.typing).to_have_text("alice is typing…")
    alice.input.press("Enter")
    for page in (alice, bob):
        page.expect_message("alice", "Looks good to me")
    expect(bob.typing).to_have_text("")
    expect(alice.input).to_have_value("")
    expect(alice.input).to_be_focused()

    # bob answers with the Send button; focus goes back to the text box
    bob.input.fill("Thanks! Merging after CI.\nSecond line.")
    bob.q("#send-button").click()
    for page in (alice, bob):
        page.expect_message("bob", "Thanks! Merging after CI.\nSecond line.")
    expect(bob.input).to_be_focused()

    for page in (alice, bob):
        shown = page.messages()
        assert [(author, text) for author, _, text in shown] == [
            ("alice", "Looks good to me"), ("bob", "Thanks! Merging after CI.\nSecond line.")]
        assert all(TIME.match(time) for _, time, _ in shown), shown
        assert sorted(page.members()) == ["alice", "bob"]
    expect(alice.q("#members li.me")).to_have_text("alice (you)")
    # own messages are marked as such
    expect(alice.q("#messages li.message.mine .author")).to_have_text("alice")
    expect(bob.q("#messages li.message.mine .author")).to_have_text("bob")

    # the other room saw nothing of it
    assert carol.messages() == []
    expect(carol.typing).to_have_text("")
    assert carol.members() == ["carol"]
    expect(carol.q("#empty")).to_be_visible()

    _save_side_by_side(alice, bob, artifacts / "browser-conversation.png")
    for page in (alice, bob, carol):
        assert page.unexpected_errors() == []


def test_markup_in_messages_and_names_is_shown_as_text(open_page, pr_id):
    markup = "<b>x</b><img src=x onerror=alert(1)>"
    evil_name = "<i>eve</i><img src=y onerror=alert(2)>"
    eve, bob = open_page(pr_id), open_page(pr_id)
    eve.join_as(evil_name)
    bob.join_as("bob")
    eve.say(markup)
    for page in (eve, bob):
        page.expect_message(evil_name, markup)
        assert page.q("#messages b, #messages i, #messages img").count() == 0
        assert page.q("#members img, #members i").count() == 0
        assert evil_name in page.members()
    # nothing ran: no alert, no script error
    bob.page.wait_for_timeout(300)  # give a would-be onerror handler time to fire
    for page in (eve, bob):
        assert page.dialogs == []
        assert page.unexpected_errors() == []


def test_an_over_long_message_shows_the_servers_error(open_page, pr_id, artifacts):
    alice, bob = open_page(pr_id), open_page(pr_id)
    alice.join_as("alice")
    bob.join_as("bob")
    too_long = "x" * 4001
    alice.input.fill(too_long)
    expect(alice.q("#counter")).to_have_text("4,001 / 4,000")
    alice.input.press("Enter")
    expect(alice.send_error).to_contain_text("too long")
    expect(alice.send_error).to_contain_text("4,000 characters")
    expect(alice.input).to_have_attribute("aria-invalid", "true")
    # the text is kept so it can be shortened, and nobody got a message
    expect(alice.input).to_have_value(too_long)
    assert alice.messages() == [] and bob.messages() == []
    alice.screenshot(artifacts / "browser-error.png")

    # shortening it clears the error, and the message goes through
    alice.input.fill("short now")
    expect(alice.send_error).to_have_text("")
    alice.input.press("Enter")
    bob.expect_message("alice", "short now")
    assert alice.unexpected_errors() == []


def test_messages_typed_in_quick_succession_stay_separate(open_page, pr_id):
    alice, bob = open_page(pr_id), open_page(pr_id)
    alice.join_as("alice")
    bob.join_as("bob")
    for word in ("one", "two", "three"):  # no waiting for the server between messages
        alice.input.press_sequentially(word, delay=5)
        alice.input.press("Enter")
    expect(bob.message_items).to_have_count(3)
    assert [text for _, _, text in bob.messages()] == ["one", "two", "three"]
    expect(alice.input).to_have_value("")


def test_a_message_posted_over_http_shows_without_making_the_bot_a_member(
        open_page, chat_server, pr_id):
    alice = open_page(pr_id)
    alice.join_as("alice")
    response = requests.post(f"{chat_server.url}/pull-requests/{pr_id}/messages",
                             json={"username": "ci-bot", "message": "Build #7 passed"},
                             headers={"Authorization": "Bearer browser-test-token"},
                             timeout=10)
    assert response.status_code == 201, response.text
    alice.expect_message("ci-bot", "Build #7 passed")
    # shown as a bot's: marked, and not styled like a person's message
    last = alice.message_items.last
    expect(last).to_have_class(re.compile(r"\bbot\b"))
    expect(last.locator(".badge")).to_have_text("bot")
    assert alice.members() == ["alice"]  # the server's presence list is the truth
    assert alice.unexpected_errors() == []


def test_page_reconnects_and_rejoins_after_a_server_restart(open_page, pr_id, artifacts):
    with servers.running(env=SERVER_ENV) as first:
        alice = open_page(pr_id, server=first)
        bob = open_page(pr_id, server=first)
        alice.join_as("alice")
        bob.join_as("bob")
        alice.say("before the restart")
        bob.expect_message("alice", "before the restart")

    for page in (alice, bob):
        page.expect_state("reconnecting")
        expect(page.status).to_contain_text("Reconnecting")
    # while away, a message is kept and the person is told why it was not sent
    alice.input.fill("sent while away")
    alice.input.press("Enter")
    expect(alice.send_error).to_contain_text("kept")
    expect(alice.input).to_have_value("sent while away")
    alice.screenshot(artifacts / "browser-reconnecting.png")

    with servers.running(env=SERVER_ENV, port=first.port):
        for page in (alice, bob):
            page.expect_state("connected", timeout=30_000)
        # the new server knows nothing of the old rooms: both pages joined again by themselves
        alice.input.press("Enter")
        for page in (alice, bob):
            page.expect_message("alice", "sent while away")
        bob.say("welcome back")
        alice.expect_message("bob", "welcome back")
        for page in (alice, bob):
            assert page.unexpected_errors(allow=CONNECTION_NOISE) == []


def test_embedded_in_a_host_page(browser, chat_server, open_page, pr_id, artifacts):
    """The chat page documentation's iframe snippet in a host app's page, talking to a full page."""
    url = f"{chat_server.url}/pr/{pr_id}/embed"
    context = browser.new_context(viewport={"width": 900, "height": 700}, locale="en-US")
    stack = contextlib.ExitStack()
    try:
        page = ("<h1>Pull request #%d</h1>"
                '<iframe src="%s" title="Chat about this pull request" '
                'style="width:100%%;max-width:480px;height:420px;border:1px solid #d0d7de;'
                'border-radius:6px" loading="lazy"></iframe>' % (pr_id, url))
        # the host app's page on its own origin, listed in PRROOM_EMBED_FRAME_ANCESTORS
        port = chat_browser.HOST_PAGE_PORT
        stack.enter_context(chat_browser.serving_page(port, page))
        evil = context.new_page()  # the same page on an origin that is not listed
        evil.goto(f"http://localhost:{port}/pr", wait_until="load")  # the iframe's too
        assert evil.frame_locator("iframe").locator("html.embed").count() == 0
        evil.close()
        host = context.new_page()
        host.goto(f"http://127.0.0.1:{port}/pr", wait_until="load")
        frame = host.frame_locator("iframe")
        embedded = ChatPage(host, chat_server.url, pr_id, frame=frame)
        expect(frame.locator("html")).to_have_class(re.compile(r"\bembed\b"))
        # chrome-less: no visible page title, and the iframe does not take focus on load
        expect(frame.locator(".title")).to_have_text(f"Chat about pull request #{pr_id}")
        assert frame.locator(".title").bounding_box()["width"] <= 2
        assert host.evaluate("document.activeElement.tagName") == "BODY"

        full = open_page(pr_id)
        full.join_as("reviewer")
        embedded.join_as("author")
        embedded.say("from the iframe")
        full.expect_message("author", "from the iframe")
        full.say("seen it")
        embedded.expect_message("reviewer", "seen it")
        host.screenshot(path=str(artifacts / "browser-embed.png"))
        assert embedded.unexpected_errors() == []
    finally:
        context.close()
        stack.close()

    # ?embed=1 is the same view
    page = open_page(pr_id, path=f"/pr/{pr_id}?embed=1")
    expect(page.q("html")).to_have_class(re.compile(r"\bembed\b"))


def test_keyboard_only_at_375_pixels(open_page, pr_id, artifacts):
    phone = open_page(pr_id, viewport={"width": 375, "height": 667}, is_mobile=True,
                      has_touch=True)
    other = open_page(pr_id)
    other.join_as("desk")

    # the name field has focus on arrival; Enter joins; focus moves to the message box
    expect(phone.q("#name-input")).to_be_focused()
    phone.page.keyboard.type("pat")
    phone.page.keyboard.press("Enter")
    phone.expect_state("connected")
    expect(phone.input).to_be_focused()

    phone.page.keyboard.type("A long word: " + "supercalifragilistic" * 8)
    phone.page.keyboard.press("Enter")
    other.expect_message("pat", "A long word: " + "supercalifragilistic" * 8)
    phone.page.keyboard.type("Shift+Enter makes")
    phone.page.keyboard.press("Shift+Enter")
    phone.page.keyboard.type("two lines")
    phone.page.keyboard.press("Enter")
    other.expect_message("pat", "Shift+Enter makes\ntwo lines")
    other.say("ok from the desk")
    phone.expect_message("desk", "ok from the desk")

    # nothing is wider than the screen
    assert phone.page.evaluate("document.documentElement.scrollWidth") <= 375
    for box in (phone.q("#messages li.message").first.bounding_box(),
                phone.q("#send-button").bounding_box(), phone.q("#status").bounding_box()):
        assert box["x"] >= 0 and box["x"] + box["width"] <= 375, box
    # the newest message is scrolled into view above the composer
    last = phone.message_items.last.bounding_box()
    assert last["y"] + last["height"] <= phone.q("#composer").bounding_box()["y"] + 1

    # Tab reaches Send, then "Change name"; Enter on it asks for a name, with focus there
    phone.page.keyboard.press("Tab")
    expect(phone.q("#send-button")).to_be_focused()
    phone.page.keyboard.press("Tab")
    expect(phone.q("#change-name")).to_be_focused()
    phone.page.screenshot(path=str(artifacts / "browser-375.png"))
    phone.page.keyboard.press("Enter")
    expect(phone.q("#name-input")).to_be_focused()
    expect(phone.q("#name-input")).to_have_value("pat")
    phone.page.keyboard.press("Control+A")
    phone.page.keyboard.type("patricia")
    phone.page.keyboard.press("Enter")
    phone.expect_state("connected")
    expect(phone.input).to_be_focused()
    phone.page.keyboard.type("renamed")
    phone.page.keyboard.press("Enter")
    other.expect_message("patricia", "renamed")
    assert phone.unexpected_errors() == [] and other.unexpected_errors() == []


def test_name_is_remembered_and_bad_names_are_explained(open_page, pr_id):
    page = open_page(pr_id)
    page.q("#name-input").fill(" ")
    page.q("#name-input").press("Enter")
    expect(page.q("#name-error")).to_have_text("Enter a name.")
    expect(page.q("#name-input")).to_have_attribute("aria-invalid", "true")
    page.join_as("remembered")
    assert page.page.evaluate("localStorage.getItem('prroom.username')") == "remembered"
    page.page.reload()
    page.expect_state("connected")
    expect(page.q("#name-form")).to_be_hidden()
    expect(page.q("#me-name")).to_have_text("remembered")


def test_accessibility_landmarks(open_page, pr_id):
    page = open_page(pr_id)
    page.join_as("ann")
    log = page.q("#messages")
    expect(log).to_have_attribute("role", "log")
    expect(log).to_have_attribute("aria-live", "polite")
    expect(page.status).to_have_attribute("role", "status")
    expect(page.send_error).to_have_attribute("role", "alert")
    expect(page.input).to_have_accessible_name("Message")
    expect(page.q("#send-button")).to_have_accessible_name("Send")
    page.say("hello")
    # the new message is inside the live region
    expect(log.locator("li.message")).to_have_count(1)


def _save_side_by_side(left, right, path) -> None:
    """One PNG of two pages next to each other (rendered by the browser, no image library)."""
    shots = [base64.b64encode(page.page.screenshot()).decode() for page in (left, right)]
    canvas = left.page.context.new_page()
    try:
        canvas.set_viewport_size({"width": 1540, "height": 580})
        canvas.set_content(
            '<body style="margin:0;background:#888;display:flex;gap:20px;padding:10px">'
            + "".join(f'<img src="data:image/png;base64,{shot}" style="display:block">'
                      for shot in shots) + "</body>")
        canvas.screenshot(path=str(path), full_page=True)
    finally:
        canvas.close()


identity_server = servers.server_fixture(
    SERVER_ENV, app="tests.browser.identity_app:app", after=("browser",),
    variants={"custom": {"PRROOM_AUTH_MODE": "custom"}, "token": {"PRROOM_AUTH_MODE": "token"}},
    doc="The identity app under gunicorn, in ``custom`` (session) or ``token`` mode.")


def test_signed_in_people_are_not_asked_for_a_name(identity_server, open_page, pr_id):
    page = f"/pr/{pr_id}"
    alice = open_page(pr_id, server=identity_server, path=f"/login/alice?next={page}")
    bob = open_page(pr_id, server=identity_server, path=f"/login/bob?next={page}")
    for person, name in ((alice, "alice"), (bob, "bob")):
        person.expect_state("connected")
        expect(person.q("#name-form")).to_be_hidden()
        expect(person.q("#change-name")).to_be_hidden()
        expect(person.q("#members li.me")).to_have_text(f"{name} (you)")
    alice.say("signed in")
    bob.expect_message("alice", "signed in")
    assert alice.unexpected_errors() == [] and bob.unexpected_errors() == []


def test_a_refused_connection_is_explained(identity_server, open_page, pr_id):
    stranger = open_page(pr_id, server=identity_server)  # not signed in: the server refuses
    stranger.expect_state("offline")
    expect(stranger.send_error).to_contain_text("not signed in")
    expect(stranger.send_error).to_be_visible()


class SocketTap:
    """Sits between the page and the server on the WebSocket, to inject server events.

    Presence events (``pr-room-members``, ``pr-room-user-joined/-left``) are not sent by every
    server yet; injecting them checks that the page already handles them.
    """

    def __init__(self, page) -> None:
        self.route = None
        self.upgraded = False
        page.route_web_socket(re.compile(r".*/socket\.io/.*"), self._on_socket)

    def _on_socket(self, route) -> None:
        server = route.connect_to_server()
        self.route = route

        def to_server(message):
            if message == "5":  # Engine.IO "upgrade": from now on packets use this socket
                self.upgraded = True
            server.send(message)

        route.on_message(to_server)
        server.on_message(route.send)

    def emit(self, page, event: str, payload: dict) -> None:
        """Deliver ``event`` to the page as if the server had sent it."""
        # Playwright's own wait, so that the page's WebSocket messages reach _on_socket
        upgraded = wait_until(lambda: self.upgraded, timeout=5, interval=0.025,
                              sleep=lambda seconds: page.wait_for_timeout(seconds * 1000))
        assert upgraded, "the page never upgraded to a WebSocket"
        assert self.route is not None
        self.route.send("42" + json.dumps([event, payload]))


def test_presence_events_drive_the_member_list(browser, chat_server, pr_id):
    context = browser.new_context(locale="en-US")
    try:
        page = context.new_page()
        tap = SocketTap(page)
        chat = ChatPage(page, chat_server.url, pr_id)
        page.goto(f"{chat_server.url}/pr/{pr_id}")
        chat.join_as("alice")

        tap.emit(page, "pr-room-members", {"pullRequestId": pr_id,
                                           "members": ["zed", "alice", "yan"]})
        expect(chat.member_items).to_have_count(3)
        assert chat.members() == ["alice", "yan", "zed"]  # yourself first, then by name
        expect(chat.q("#member-count")).to_have_text("(3)")
        expect(chat.q("#members-note")).to_be_hidden()

        tap.emit(page, "pr-room-user-joined", {"pullRequestId": pr_id, "username": "xia"})
        expect(chat.member_items).to_have_count(4)
        tap.emit(page, "typing", {"pullRequestId": pr_id, "username": "yan"})
        expect(chat.typing).to_have_text("yan is typing…")
        tap.emit(page, "pr-room-user-left", {"pullRequestId": pr_id, "username": "yan"})
        expect(chat.member_items).to_have_count(3)
        assert chat.members() == ["alice", "xia", "zed"]
        expect(chat.typing).to_have_text("")  # who left no longer types
        # events about another room change nothing
        tap.emit(page, "pr-room-user-joined", {"pullRequestId": pr_id + 1, "username": "out"})
        tap.emit(page, "pr-room-members", {"pullRequestId": pr_id + 1, "members": []})
        chat.say("still here")
        chat.expect_message("alice", "still here")
        assert chat.members() == ["alice", "xia", "zed"]
        assert chat.unexpected_errors() == []
    finally:
        context.close()


def test_after_a_blip_missed_messages_appear_and_a_lost_session_is_said(open_page, pr_id):
    from tests.support.proxy import TcpProxy
    env = {**SERVER_ENV, "PRROOM_RECOVERY_WINDOW": "30", "PRROOM_PRESENCE_GRACE": "3"}
    with servers.running(env=env) as server:
        proxy = TcpProxy(server.port)
        try:
            alice = open_page(pr_id, server=proxy)
            bob = open_page(pr_id, server=server)
            alice.join_as("alice")
            bob.join_as("bob")
            bob.say("before the blip")
            alice.expect_message("bob", "before the blip")
            proxy.cut()
            alice.expect_state("reconnecting")
            bob.say("during the blip")
            proxy.reopen()
            alice.expect_state("connected", timeout=30_000)
            alice.expect_message("bob", "during the blip")
            expect(alice.page.locator(".notice")).to_have_count(0)
            expect(bob.page.locator(".message")).to_have_count(2)
            server.stop()
            with servers.running(env=env, port=server.port):
                # a restarted server has no sessions: the page says what may have been lost
                alice.expect_state("connected", timeout=30_000)
                expect(alice.page.locator(".notice")).to_contain_text("may have been missed")
        finally:
            proxy.close()
