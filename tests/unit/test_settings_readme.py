"""README's settings tables and the declarations in prroom/core/config.py say the same.

The declaration (``Setting(...)``) is the one source; README explains each key in words, so
this test holds the tables to it: every declared key is documented exactly once, nothing
undeclared is, and each default README shows is the declared default.
"""
import re
from pathlib import Path

from prroom.core.config import SERVER_SETTINGS, SETTINGS, SETTINGS_BY_KEY, Setting

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
KEY = re.compile(r"`(PRROOM_[A-Z_]+)`")
ALL = {setting.key: setting for setting in SETTINGS + SERVER_SETTINGS}


def table_rows() -> list:
    """(keys, default cell) of every README table row whose first cell names settings."""
    rows = []
    for line in README.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and line.startswith("|") and KEY.search(cells[0]) \
                and cells[0].startswith("`PRROOM_"):
            rows.append((KEY.findall(cells[0]), cells[1]))
    return rows


def test_every_setting_has_exactly_one_row():
    documented = [key for keys, _ in table_rows() for key in keys]
    assert sorted(set(documented)) == sorted(documented), "a key is documented twice"
    assert set(documented) == set(ALL)


def declared_default_matches(setting: Setting, shown: str) -> bool:
    if setting.default in (None, ""):
        return shown in ('""', "")  # README words it ("empty = ...", "—")
    try:
        return setting.coerce(shown) == setting.default
    except Exception:
        return False


def test_defaults_in_readme_are_the_declared_ones():
    wrong = []
    for keys, cell in table_rows():
        values = re.findall(r"`([^`]*)`", cell)
        if cell.startswith(("empty", "—")) or len(values) != len(keys):
            # a worded default ("empty = the app's `SECRET_KEY`"): only for empty defaults
            values = [""] * len(keys)
        for key, shown in zip(keys, values):
            if not declared_default_matches(ALL[key], shown):
                wrong.append((key, shown, ALL[key].default))
    assert wrong == []


def test_app_and_server_settings_do_not_overlap():
    assert not set(SETTINGS_BY_KEY) & {setting.key for setting in SERVER_SETTINGS}
