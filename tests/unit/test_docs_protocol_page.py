"""The protocol page names every event and every error code the code declares.

docs/protocol.md explains each event and code in words, so its tables are written by hand;
this holds them to prroom/core/protocol.py: a code or an event added there without a row
on the page (the first cell, as clients branch on it) fails here.
"""
import re
from pathlib import Path

from prroom.core import protocol

PAGE = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()


def section(title: str) -> str:
    return PAGE.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def first_cells(text: str) -> set:
    return set(re.findall(r"^\| `([a-z-]+)` \|", text, re.M))


def test_every_error_code_has_a_row():
    codes = {value for name, value in vars(protocol.ErrorCode).items() if name.isupper()}
    assert codes == first_cells(section("Errors"))


def test_every_event_has_a_row():
    assert set(protocol.CLIENT_EVENTS) == first_cells(section("Events a client sends"))
    sent = {protocol.MESSAGE, protocol.ERROR, protocol.MEMBERS, protocol.USER_JOINED,
            protocol.USER_LEFT, protocol.SHUTDOWN, protocol.TYPING, protocol.STOP_TYPING}
    assert sent == first_cells(section("Events the server sends"))
