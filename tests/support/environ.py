"""Every test, and every server a test starts, begins from no ``PRROOM_*`` setting.

A setting left in the shell that runs the tests (``PRROOM_AUTH_MODE=token``, say) would
otherwise change what the servers under test do and what ``create_app()`` reads.  Only
prroom's own settings are removed: ``PRROOM_TEST_*`` variables are for the test suite.
"""
from __future__ import annotations

from typing import Dict, Mapping

import pytest

from prroom.core.config import SERVER_SETTINGS, SETTINGS

SETTING_KEYS = frozenset(setting.key for setting in (*SETTINGS, *SERVER_SETTINGS))


def without_settings(env: Mapping[str, str]) -> Dict[str, str]:
    """A copy of ``env`` without any of prroom's settings."""
    return {key: value for key, value in env.items() if key not in SETTING_KEYS}


def clear_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove prroom's settings from ``os.environ`` for one test."""
    for key in SETTING_KEYS:
        monkeypatch.delenv(key, raising=False)
