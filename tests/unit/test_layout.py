"""The package's layers (README "Layout"): imports only ever point down.

``core`` (the product's logic) imports no web framework and nothing of prroom above it;
``internals`` (the reaches into libraries) knows nothing of prroom's server side; ``server``
never imports the entry points.  Checked on the source, so a stray import fails here before
anyone has to draw the graph.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "prroom"
ENTRY_POINTS = {"prroom.app", "prroom.cli", "prroom.wsgi", "prroom.gunicorn_config",
                "prroom.__main__"}
FRAMEWORKS = {"flask", "flask_socketio", "socketio", "engineio", "gevent", "geventwebsocket",
              "gunicorn", "werkzeug"}


def imports_of(path: Path) -> set:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import (write prroom.<layer>...)"
            names.add(node.module or "")
    return names


def modules(layer: str) -> list:
    return sorted((PACKAGE / layer).glob("*.py"))


def test_every_module_is_in_a_layer_or_an_entry_point():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == {"__init__", "__main__", "app", "cli", "wsgi", "gunicorn_config"}
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        "core", "server", "internals"}


@pytest.mark.parametrize("path", modules("core"), ids=lambda p: p.name)
def test_core_imports_no_framework_and_nothing_above_it(path):
    bad = {name for name in imports_of(path)
           if name.split(".")[0] in FRAMEWORKS
           or (name.startswith("prroom.") and not name.startswith("prroom.core"))}
    assert bad == set()


@pytest.mark.parametrize("path", modules("internals"), ids=lambda p: p.name)
def test_internals_know_nothing_of_the_server_side(path):
    bad = {name for name in imports_of(path)
           if name.startswith(("prroom.server", *ENTRY_POINTS))}
    assert bad == set()


@pytest.mark.parametrize("path", modules("server"), ids=lambda p: p.name)
def test_server_side_never_imports_an_entry_point(path):
    assert {name for name in imports_of(path) if name in ENTRY_POINTS} == set()


@pytest.mark.parametrize("path", modules("server"), ids=lambda p: p.name)
def test_server_side_reaches_into_no_library_internals(path):
    # the private attributes prroom needs are read in prroom/internals only
    source = path.read_text()
    for private in (".handlers", "server_options", "sockio_mw", "_handle_event_internal",
                    ".eio.", "eio.sockets"):
        assert private not in source, f"{path.name} reads {private}: move it to internals/"
