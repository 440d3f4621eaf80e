"""The seams (prroom/internals/seams.py): every name prroom reaches in a library, deleted
before prroom loads as a release might drop it, gives a clean start with one warning naming
the seam, or a clean refusal naming it; never a traceback, never a silent start."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import socketio

from prroom.internals import seams

ROOT = Path(__file__).resolve().parents[2]
TOUCHES = sorted({touch for seam in seams.SEAMS for touch in seam.touches})


def seams_touching(touch: str) -> List[seams.Seam]:
    return [seam for seam in seams.SEAMS if touch in seam.touches]


def probe(touch: str, accept: str = "") -> Dict[str, Any]:
    result = subprocess.run([sys.executable, "-m", "tests.support.seam_probe", touch, accept],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    answer: Dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


#: Names the library's own code needs at start: a release without them has changed that code
#: too, so deleting the name alone breaks the library itself, before prroom is involved.
LIBRARY_NEEDS = {"socketio.packet:Packet.json", "prometheus_client.values:Lock"}


@pytest.mark.parametrize("touch", sorted(LIBRARY_NEEDS))
def test_names_the_library_itself_needs(touch: str) -> None:
    answer = probe(touch)
    frames = [line for line in answer["traceback"].splitlines() if line.startswith('  File "')]
    assert "site-packages" in frames[-1] and "prroom" not in frames[-1].split("site-packages")[1]


@pytest.mark.parametrize("touch", sorted(set(TOUCHES) - LIBRARY_NEEDS))
def test_a_missing_name_refuses_or_warns_naming_its_seam(touch: str) -> None:
    answer = probe(touch)
    assert answer["traceback"] is None, answer["traceback"]
    touching = seams_touching(touch)
    if answer["still_there"]:  # inherited from a base class: the library still has it
        assert answer["started"] and answer["warnings"] == []
        return
    protections = [seam.name for seam in touching if seam.kind == seams.PROTECTION]
    if protections:
        assert not answer["started"]
        refusal = answer["refusal"]
        assert "\n" not in refusal and "PRROOM_ACCEPT_MISSING=" in refusal
        assert any(f"protection {name!r}" in refusal for name in protections), refusal
    else:
        assert answer["started"], answer
        for seam in touching:
            assert sum(f"seam {seam.name} " in line for line in answer["warnings"]) == 1, \
                (seam.name, answer["warnings"])


@pytest.mark.parametrize("touch", ["socketio.server:Server._handle_connect",
                                   "gevent.pywsgi:WSGIHandler.MessageClass"])
def test_an_operator_may_accept_running_without_a_protection(touch: str) -> None:
    accept = ",".join(sorted(seams.PROTECTIONS))
    answer = probe(touch, accept)
    assert answer["traceback"] is None and answer["started"], answer
    assert any("missing (accepted)" in line for line in answer["warnings"]), answer


def test_every_name_is_there_in_the_installed_releases() -> None:
    server = socketio.Server(async_mode="threading")
    assert {seam.name: seam.missing([server, server.eio]) for seam in seams.SEAMS} == \
        {seam.name: [] for seam in seams.SEAMS}


def test_apply_acts_on_the_kind(caplog: pytest.LogCaptureFixture) -> None:
    server = socketio.Server(async_mode="threading")
    caplog.set_level(logging.WARNING, "prroom")
    assert seams.apply("packet-codec", lambda: False, server=server).status == seams.FELL_BACK
    assert sum("seam packet-codec" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(seams.SeamRefused, match="protection 'connect-handling'"):
        seams.apply("connect-handling", lambda: False, server=server)
    accepted = seams.apply("connect-handling", lambda: 1 / 0, server=server,
                           accepted=("connect-handling",))
    assert accepted.status == seams.ACCEPTED and "ZeroDivisionError" in accepted.reason
    statuses = {o.seam.name: o.status for o in seams.report(server)}
    assert statuses["packet-codec"] == seams.FELL_BACK
    assert statuses["connect-handling"] == seams.ACCEPTED


def test_accept_missing_names_only_protections() -> None:
    assert seams.parse_accepted(["packet-guard"]) == ("packet-guard",)
    with pytest.raises(ValueError, match="not a protection seam: packet-codec"):
        seams.parse_accepted(["packet-codec"])


def test_a_newer_release_than_proven_is_named_once(monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(seams.PROVEN, "python-socketio", "0.1")
    caplog.set_level(logging.WARNING, "prroom")
    assert "python-socketio" in seams.warn_about_newer_releases()
    assert sum("python-socketio" in r.getMessage() for r in caplog.records) == 1


def test_the_documentation_table_is_the_declarations() -> None:
    # docs/architecture.md renders seams.markdown_table() when the site is built (the
    # prroom-seams directive, docs/_ext): nothing hand-copied that could go stale
    page = (ROOT / "docs" / "architecture.md").read_text()
    assert page.count("```{prroom-seams}\n") == 1
    assert "| seam | kind |" not in page, "a hand-written seams table beside the generated one"
    table = seams.markdown_table().splitlines()
    assert len(table) == 2 + len(seams.SEAMS)
    for seam, row in zip(seams.SEAMS, table[2:]):
        assert row.startswith(f"| `{seam.name}` | {seam.kind} | {seam.library} ")
        assert all(f"`{touch}`" in row for touch in seam.touches)
