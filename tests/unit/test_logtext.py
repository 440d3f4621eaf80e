"""Client text in log records: escaped and cut by one filter."""
from __future__ import annotations

import logging

from prroom.core.logtext import MAX_ARGUMENT_CHARS, ClientTextFilter, Verbatim, escape

FORGED = "x\n[2026-01-01 00:00:00 +0000] [1] [WARNING] FORGED admin logged in"


def record(msg: str, *args, name: str = "prroom") -> logging.LogRecord:
    made = logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)
    assert ClientTextFilter().filter(made) is True
    return made


def test_escape_keeps_a_line_a_line():
    assert escape(FORGED) == FORGED.replace("\n", "\\n")
    assert escape("tab\tcr\r\x1b[31m\x00\x7f\x85\u2028\ufeff") == \
        "tab\\tcr\\r\\x1b[31m\\x00\\x7f\\u0085\\u2028\\ufeff"
    assert escape("a\\nb") == "a\\\\nb"  # a typed backslash-n is not an escaped newline
    assert escape("zoë 名前") == "zoë 名前"
    long = escape("y" * 5000)
    assert long == "y" * MAX_ARGUMENT_CHARS + f"...(+{5000 - MAX_ARGUMENT_CHARS} chars)"


def test_every_argument_is_escaped_numbers_and_verbatim_are_kept():
    line = record("refused %s sid=%s n=%d lag=%.0f rooms=%s stack:\n%s", FORGED, "s1", 3,
                  1.5, ["pr:1\nX"], Verbatim("  File a\n  File b")).getMessage()
    assert line.splitlines() == [
        "refused x\\n[2026-01-01 00:00:00 +0000] [1] [WARNING] FORGED admin logged in "
        "sid=s1 n=3 lag=2 rooms=['pr:1\\\\nX'] stack:", "  File a", "  File b"]


def test_a_library_message_is_escaped_whole_and_only_once():
    made = record("https://x\n FORGED is not an accepted origin.", name="engineio.server")
    assert made.getMessage() == "https://x\\n FORGED is not an accepted origin."
    assert ClientTextFilter().filter(made) and made.getMessage().count("\\\\") == 0
