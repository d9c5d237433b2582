"""The chat's web page in a real headless browser, against the example server.

Debian's ``chromium`` driven by Playwright. ``.ci/run`` installs it, and in CI
(``CI`` set) a missing chromium fails these tests; on a developer's machine
without it they are skipped with the command that installs it. The server is the example's own
``server.py`` in a subprocess, serving the page and the WebSocket on one port.
A user's view: two pages in one room see each other's messages live, rooms
keep their own history, a rate-limited sender sees why, a page that loses
the server says so and comes back by itself when the server does, and an
admin signs in with the token (``securemcp.seed`` beside ``bearer.<token>``)
to clear a room while a wrong token leaves the page chatting anonymously.

``SECUREMCP_UPDATE_SCREENSHOT=1`` also writes ``docs/chat-page.png``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from .chat_server import ChatServer

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# How long the page may take to notice a change; reconnecting waits out a backoff of a few seconds.
UI_TIMEOUT_MS = 20_000
ADMIN_TOKEN = "test-admin-token-1234"


@pytest.fixture(params=["asyncio", "trio"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChatServer]:
    """The example server with a fresh database, on a port the OS picks, on each backend.

    Sending is limited to a burst of 3 messages, then one every 2 seconds;
    ``ADMIN_TOKEN`` may clear the history.
    """
    options = ("--rate", "0.5", "--burst", "3", "--admin-token", ADMIN_TOKEN)
    chat = ChatServer(tmp_path / "chat.db", request.param, *options)
    chat.start()
    try:
        yield chat
    finally:
        chat.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless chromium (not Playwright's own download)."""
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} is missing: apt-get install --no-install-recommends chromium"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_chat(browser: Browser, url: str, username: str) -> tuple[Page, list[str]]:
    """A fresh page (its own storage) on the chat, connected, with ``username`` typed in.

    Also the list that collects the page's uncaught script errors.
    """
    page = browser.new_context(viewport={"width": 1000, "height": 640}).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    expect(page.get_by_role("status")).to_have_text("Connected", timeout=UI_TIMEOUT_MS)
    page.get_by_label("Your name").fill(username)
    return page, errors


def say(page: Page, text: str) -> None:
    """Type ``text`` in the message box and send it with Enter."""
    box = page.get_by_label("Message")
    box.fill(text)
    box.press("Enter")


@pytest.mark.timeout(180)
def test_two_pages_chat_live_switch_rooms_and_survive_a_restart(
    browser: Browser, server: ChatServer, tmp_path: Path
) -> None:
    alice, alice_errors = open_chat(browser, server.url, "alice")
    bob, bob_errors = open_chat(browser, server.url, "bob")
    messages_a, messages_b = alice.get_by_role("log"), bob.get_by_role("log")

    # The page is served with a policy that lets it load nothing from elsewhere.
    answer = alice.request.get(server.url)
    assert answer.ok
    assert "default-src 'none'" in answer.headers["content-security-policy"]

    # Live in both directions, without reloading.
    expect(alice.get_by_role("heading", name="# general")).to_be_visible()
    say(alice, "hello from alice")
    expect(messages_b).to_contain_text("hello from alice", timeout=UI_TIMEOUT_MS)
    say(bob, "hi alice, bob here")
    expect(messages_a).to_contain_text("hi alice, bob here", timeout=UI_TIMEOUT_MS)
    expect(messages_a.get_by_role("listitem")).to_have_count(2)
    expect(alice.get_by_label("Message")).to_have_value("")

    # A room of its own: bob does not see it until he joins, then gets its history.
    alice.get_by_label("Join or create a room").fill("random")
    alice.get_by_role("button", name="Join").click()
    expect(alice.get_by_role("heading", name="# random")).to_be_visible()
    expect(messages_a).to_contain_text("No messages yet")
    say(alice, "anyone in random?")
    expect(messages_a).to_contain_text("anyone in random?", timeout=UI_TIMEOUT_MS)
    say(bob, "still in general")
    # Once bob's own copy is back, the server has published it: alice, elsewhere, has none.
    expect(messages_b).to_contain_text("still in general", timeout=UI_TIMEOUT_MS)
    expect(messages_a).not_to_contain_text("still in general")
    expect(messages_b).not_to_contain_text("anyone in random?")
    bob.get_by_label("Join or create a room").fill("random")
    bob.get_by_role("button", name="Join").click()
    expect(messages_b).to_contain_text("anyone in random?", timeout=UI_TIMEOUT_MS)
    expect(messages_b).not_to_contain_text("still in general")
    # Back to general by clicking it in the room list: its history comes back.
    rooms = alice.get_by_role("navigation", name="Rooms")
    rooms.get_by_role("button", name=re.compile(r"# general")).click()
    expect(messages_a).to_contain_text("still in general", timeout=UI_TIMEOUT_MS)
    expect(rooms.get_by_role("button", name=re.compile(r"# random"))).to_be_visible()

    # The server goes away: both pages say so; it comes back on the same port:
    # both reconnect by themselves, rejoin their rooms and reload the history.
    server.stop()
    for page in (alice, bob):
        expect(page.get_by_role("status")).to_have_text("Disconnected", timeout=UI_TIMEOUT_MS)
        expect(page.get_by_role("alert")).to_contain_text("Reconnecting")
        expect(page.get_by_role("button", name="Send")).to_be_disabled()
    server.start()
    for page in (alice, bob):
        expect(page.get_by_role("status")).to_have_text("Connected", timeout=UI_TIMEOUT_MS)
        expect(page.get_by_role("alert")).to_be_hidden()
    expect(messages_a).to_contain_text("still in general", timeout=UI_TIMEOUT_MS)
    expect(messages_b).to_contain_text("anyone in random?", timeout=UI_TIMEOUT_MS)
    say(bob, "back after the restart")
    expect(messages_b).to_contain_text("back after the restart", timeout=UI_TIMEOUT_MS)
    bob.get_by_label("Join or create a room").fill("general")
    bob.get_by_role("button", name="Join").click()
    expect(messages_b).to_contain_text("hi alice, bob here", timeout=UI_TIMEOUT_MS)
    say(bob, "bob is back in general")
    expect(messages_a).to_contain_text("bob is back in general", timeout=UI_TIMEOUT_MS)
    # Alice's room list catches up with bob's moves by itself.
    expect(rooms.get_by_role("button", name=re.compile(r"# general.*2 online"))).to_be_visible(
        timeout=UI_TIMEOUT_MS
    )
    expect(rooms.get_by_role("button", name=re.compile(r"# random.*0 online"))).to_be_visible()

    screenshot = tmp_path / "chat-page.png"
    if os.environ.get("SECUREMCP_UPDATE_SCREENSHOT") == "1":
        screenshot = ROOT / "docs" / "chat-page.png"
    alice.screenshot(path=str(screenshot))
    assert screenshot.stat().st_size > 10_000
    assert alice_errors == bob_errors == []


@pytest.mark.timeout(120)
def test_a_rate_limited_sender_sees_the_error_and_when_to_retry(
    browser: Browser, server: ChatServer
) -> None:
    page, errors = open_chat(browser, server.url, "speedy")
    messages, alert = page.get_by_role("log"), page.get_by_role("alert")
    for n in range(1, 4):
        say(page, f"message {n}")
        expect(messages.get_by_text(f"message {n}", exact=True)).to_be_visible()
    say(page, "one too many")
    expect(alert).to_contain_text(re.compile(r"Rate limited.*Try again in [12] s"))
    # The refused message was not posted, and stays in the box to send again later.
    expect(messages).not_to_contain_text("one too many")
    expect(page.get_by_label("Message")).to_have_value("one too many")
    # The banner goes once the wait is over, and then the message goes through.
    expect(alert).to_be_hidden(timeout=UI_TIMEOUT_MS)
    page.get_by_label("Message").press("Enter")
    expect(messages.get_by_text("one too many", exact=True)).to_be_visible()
    assert errors == []


@pytest.mark.timeout(120)
def test_a_room_cleared_by_the_admin_empties_on_every_open_page(
    browser: Browser, server: ChatServer
) -> None:
    page, errors = open_chat(browser, server.url, "visitor")
    say(page, "soon gone")
    expect(page.get_by_role("log").get_by_text("soon gone", exact=True)).to_be_visible()

    # The admin signs in on a page of their own: the token travels as
    # ["securemcp.seed", "bearer." + token], the only way a browser can send it.
    admin, admin_errors = open_chat(browser, server.url, "root")
    clear = admin.get_by_role("button", name="Clear this room's history")
    expect(clear).to_be_hidden()  # anonymous: no such power
    admin.get_by_label("Admin token").fill(ADMIN_TOKEN)
    admin.get_by_role("button", name="Sign in").click()
    expect(admin.get_by_role("status")).to_have_text("Connected as admin", timeout=UI_TIMEOUT_MS)
    expect(admin.get_by_role("log").get_by_text("soon gone", exact=True)).to_be_visible()
    expect(admin.get_by_label("Admin token")).to_have_value("")  # not left on screen
    clear.click()

    expect(page.get_by_role("log")).to_have_text("No messages yet. Say hello!")
    expect(admin.get_by_role("log")).to_have_text("No messages yet. Say hello!")
    expect(admin.get_by_role("alert")).to_have_text("History of #general cleared.")
    assert errors == []
    assert admin_errors == []


@pytest.mark.timeout(120)
def test_a_wrong_admin_token_is_refused_and_the_page_chats_on(
    browser: Browser, server: ChatServer
) -> None:
    page, errors = open_chat(browser, server.url, "guesser")
    page.get_by_label("Admin token").fill("not-the-admin-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Admin token refused.", timeout=UI_TIMEOUT_MS)
    expect(page.get_by_role("status")).to_have_text("Connected", timeout=UI_TIMEOUT_MS)
    expect(page.get_by_role("button", name="Clear this room's history")).to_be_hidden()
    say(page, "still here")
    expect(page.get_by_role("log").get_by_text("still here", exact=True)).to_be_visible()
    assert errors == []
