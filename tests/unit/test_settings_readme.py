"""The documentation's configuration reference is the declarations in prroom/core/config.py.

The declaration (``Setting(...)``) is the one source: docs/configuration.md renders both
tables with the ``prroom-settings`` directive (docs/_ext), so nothing is copied by hand.
These tests hold the page to using it, and the generator to covering every declared key
exactly once with its declared default and a description (a setting without one stops the
documentation build).  The generator is loaded by path: it needs no Sphinx.
"""
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from prroom.core.config import SERVER_SETTINGS, SETTINGS, SETTINGS_BY_KEY, Setting

ROOT = Path(__file__).resolve().parents[2]
KEY = re.compile(r"^\| `(PRROOM_[A-Z_]+)` \| ([^|]*) \|")


def _load_reference():
    path = ROOT / "docs" / "_ext" / "prroom_reference.py"
    spec = importlib.util.spec_from_file_location("prroom_reference_under_test", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


reference = _load_reference()


def rows(settings) -> dict:
    """key -> default cell of the generated table."""
    found = {}
    for line in reference.settings_table(settings).splitlines():
        match = KEY.match(line)
        if match:
            assert match.group(1) not in found, f"{match.group(1)} twice"
            found[match.group(1)] = match.group(2).strip()
    return found


def test_the_configuration_page_renders_both_declarations():
    page = (ROOT / "docs" / "configuration.md").read_text()
    directive = "```{" + reference.SETTINGS_DIRECTIVE + "}\n"
    assert page.count(directive + ":which: app\n") == 1
    assert page.count(directive + ":which: server\n") == 1
    # and no hand-written settings table beside them
    assert not [line for line in page.splitlines() if line.startswith("| `PRROOM_")]


def test_every_setting_has_exactly_one_row():
    assert set(rows(SETTINGS)) == {setting.key for setting in SETTINGS}
    assert set(rows(SERVER_SETTINGS)) == {setting.key for setting in SERVER_SETTINGS}


def test_each_row_shows_the_declared_default():
    wrong = []
    for settings in (SETTINGS, SERVER_SETTINGS):
        for key, cell in rows(settings).items():
            setting = next(s for s in settings if s.key == key)
            shown = re.findall(r"`([^`]*)`", cell)
            if setting.default in (None, ""):
                ok = cell == "*(empty)*"
            else:
                ok = len(shown) == 1 and setting.coerce(shown[0]) == setting.default
            if not ok:
                wrong.append((key, cell, setting.default))
    assert wrong == []


def test_a_setting_without_a_description_stops_the_build():
    bare = Setting("PRROOM_UNDOCUMENTED", 1, int, "  ")
    with pytest.raises(reference.Undocumented, match="PRROOM_UNDOCUMENTED"):
        reference.settings_table((bare,))


def test_app_and_server_settings_do_not_overlap():
    assert not set(SETTINGS_BY_KEY) & {setting.key for setting in SERVER_SETTINGS}
