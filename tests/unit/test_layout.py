"""The package's layers (docs/architecture.md): imports only ever point down, and only the adapters
reach into a library's private parts.

``core`` (the product's logic) imports no web framework and nothing of prroom above it; the
subsystems (``cluster``, ``transport``, ``diagnostics``) and the adapters (``internals``)
know nothing of prroom's server side; ``server`` never imports the entry points.  Outside
``internals``, no code reads an underscore attribute of an object that is not its own
(``self``, ``cls``, ``super()``): such a reach is a declared seam in the adapters' package.
Checked on the syntax tree, so a stray import or reach fails here before anyone has to
draw the graph.
"""
import ast
import re
from pathlib import Path
from typing import Dict, List, Set

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "prroom"
ENTRY_POINTS = {"prroom.app", "prroom.cli", "prroom.wsgi", "prroom.gunicorn_config",
                "prroom.__main__"}
FRAMEWORKS = {"flask", "flask_socketio", "socketio", "engineio", "gevent", "geventwebsocket",
              "gunicorn", "werkzeug"}
LAYERS = {"core", "server", "internals", "cluster", "transport", "diagnostics"}
SUBSYSTEMS = ("internals", "cluster", "transport", "diagnostics")
#: The longest a module may be.
MAX_MODULE_LINES = 450
#: Underscore names that are public API: namedtuple's methods, Flask's documented proxy
#: accessor.
PUBLIC_UNDERSCORE = {"_replace", "_asdict", "_fields", "_make", "_get_current_object"}


def imports_of(path: Path) -> Set[str]:
    names: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import (write prroom.<layer>...)"
            names.add(node.module or "")
    return names


def modules(*layers: str) -> List[Path]:
    return sorted(path for layer in layers for path in (PACKAGE / layer).glob("*.py"))


def test_every_module_is_in_a_layer_or_an_entry_point():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == {"__init__", "__main__", "app", "cli", "wsgi", "gunicorn_config"}
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"
            and p.name not in ("static", "templates")} == LAYERS


@pytest.mark.parametrize("path", modules("core"), ids=lambda p: p.name)
def test_core_imports_no_framework_and_nothing_above_it(path):
    bad = {name for name in imports_of(path)
           if name.split(".")[0] in FRAMEWORKS
           or (name.startswith("prroom.") and not name.startswith("prroom.core"))}
    assert bad == set()


@pytest.mark.parametrize("path", modules(*SUBSYSTEMS), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_subsystems_and_adapters_know_nothing_of_the_server_side(path):
    bad = {name for name in imports_of(path)
           if name.startswith(("prroom.server", *ENTRY_POINTS))}
    assert bad == set()


@pytest.mark.parametrize("path", modules("transport", "diagnostics"), ids=lambda p: p.name)
def test_the_transport_knows_nothing_of_the_cluster(path):
    # the cluster manager hands a room broadcast's frame to the transport's writers, so
    # cluster/ imports transport/; the other way round would be a cycle between them
    assert {name for name in imports_of(path) if name.startswith("prroom.cluster")} == set()


@pytest.mark.parametrize("path", modules("server"), ids=lambda p: p.name)
def test_server_side_never_imports_an_entry_point(path):
    assert {name for name in imports_of(path) if name in ENTRY_POINTS} == set()


def foreign_private_reads(path: Path) -> List[str]:
    """``obj._name`` where ``obj`` is not ``self``, ``cls`` or ``super()``, with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") \
                or node.attr.startswith("__") or node.attr in PUBLIC_UNDERSCORE:
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) \
                and owner.func.id == "super":
            continue
        found.append(f"{path.parent.name}/{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("path", [p for p in sorted(PACKAGE.rglob("*.py"))
                                  if p.parent.name != "internals"],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_only_the_adapters_read_private_attributes_of_other_objects(path):
    # a library's private name (or another prroom object's) read outside prroom/internals:
    # make it a function of an adapter there, declared in prroom/internals/seams.py
    assert foreign_private_reads(path) == []


def test_the_rule_above_sees_a_reach(tmp_path):
    (tmp_path / "adapter").mkdir()
    module = tmp_path / "adapter" / "m.py"
    module.write_text("server._send_packet(1)\nself._own\nsuper()._init()\nrow._replace()\n")
    assert foreign_private_reads(module) == ["adapter/m.py:1: server._send_packet"]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_module_reads_in_one_sitting(path):
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES, \
        f"{path.name}: split it by what its parts are"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path) -> Dict[str, Set[str]]:
    """Each module of ``package`` -> the modules of it that it imports, anywhere in its
    text (under ``TYPE_CHECKING`` and inside functions too: a deferred import is still a
    dependency, only hidden from the interpreter)."""
    paths = {module_name(path, package): path for path in package.rglob("*.py")}
    graph: Dict[str, Set[str]] = {}
    for name, path in paths.items():
        targets: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets.add(node.module)  # and ``from package import module``:
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = {target for target in targets if target in paths and target != name}
    return graph


def import_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    cycles: List[List[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(cycles)


def test_no_module_imports_one_that_imports_it_back():
    # a cycle of imports is a cycle of objects reaching into each other: break it with a
    # part both use (as prroom/server/broadcaster.py is for the handlers and recovery).
    # The package's __init__ is left out: it imports its public names lazily (PEP 562),
    # so nothing it names is loaded with it.
    graph = import_graph(PACKAGE)
    graph["prroom"] = set()
    assert import_cycles(graph) == []


def test_the_cycle_rule_sees_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "d2"}, "d2": {"d"}, "e": set()}
    assert import_cycles(graph) == [["a", "b", "c"], ["d", "d2"]]


def test_the_workers_old_dotted_path_still_names_it():
    # deployments name it in their gunicorn configuration
    from prroom.internals.gunicorn_worker import WebSocketWorker as old
    from prroom.transport.worker import WebSocketWorker

    assert old is WebSocketWorker


def test_the_architecture_page_names_every_module():
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    missing = [f"{path.parent.name}/{path.name}" for path in sorted(PACKAGE.rglob("*.py"))
               if path.name != "__init__.py"
               and not re.search(r"(^|\s)" + re.escape(path.name) + r"[\s:]", page, re.M)]
    assert missing == [], "docs/architecture.md's file list misses these: add a line each"
