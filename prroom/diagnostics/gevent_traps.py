"""Start-up checks for what will block gevent's event loop in a host app's process.

Each finding is one line naming the trap and its fix (the documentation, "Adding
prroom to a Flask app").  Checked once, after monkey-patching, by the extension under gevent and by
``prroom check-config``:

- a standard-library module gevent patches that is not patched (``socket``, ``ssl``,
  ``select``, ``threading``, ``time``...);
- a module that kept a reference to an unpatched function or class: it was imported before
  ``monkey.patch_all()`` ran (``from socket import create_connection`` at the top of a module
  imported too early), so it still blocks;
- a known blocking driver without its gevent adapter: ``psycopg2`` without psycogreen's wait
  callback, ``MySQLdb`` (mysqlclient), ``pylibmc``.
"""
from __future__ import annotations

import sys
import sysconfig
from typing import Any, Dict, List, Set, Tuple

#: Modules gevent's ``patch_all()`` patches and a chat server relies on.
PATCHED_MODULES = ("socket", "ssl", "select", "threading", "time", "os", "subprocess",
                   "signal", "queue")

#: (module, name) whose unpatched original, found in another module, means that module was
#: imported before patching.
ORIGINALS = (("socket", "socket"), ("socket", "create_connection"),
             ("socket", "getaddrinfo"), ("ssl", "SSLContext"), ("time", "sleep"),
             ("select", "select"), ("threading", "Lock"), ("threading", "Thread"))

#: Where a reference to an original is expected: gevent itself, and the standard library
#: (which gevent patches in place, keeping the originals).
_EXEMPT_PREFIXES = ("gevent", "greenlet", "prroom.internals")
_STDLIB = sysconfig.get_paths()["stdlib"]

#: (module, attribute) that prroom itself set to an original, knowing it cannot block.
_DELIBERATE: Set[Tuple[str, str]] = set()


def deliberate_original(module: str, attribute: str) -> None:
    """``module.attribute`` holds an original on purpose (prroom put it there): no trap."""
    _DELIBERATE.add((module, attribute))


def find_traps() -> List[str]:
    """Every trap present in this process, one line each (empty when all is well)."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return []
    if not monkey.is_module_patched("socket"):
        return ["gevent has not monkey-patched this process: under gunicorn's gevent "
                "worker it must be (run the checks in the server process)"]
    traps = [f"the {name} module is not monkey-patched: call gevent.monkey.patch_all() "
             "before anything else is imported"
             for name in PATCHED_MODULES if not monkey.is_module_patched(name)]
    traps += _imported_before_patching(monkey)
    traps += _blocking_drivers()
    return traps


def _imported_before_patching(monkey: Any) -> List[str]:
    originals: Dict[int, str] = {}
    for module_name, attribute in ORIGINALS:
        if not monkey.is_module_patched(module_name):
            continue
        original = monkey.get_original(module_name, attribute)
        patched = getattr(sys.modules.get(module_name), attribute, None)
        if original is not patched:
            originals[id(original)] = f"{module_name}.{attribute}"
    found: List[Tuple[str, str, str]] = []
    for name, module in list(sys.modules.items()):
        if module is None or name.startswith(_EXEMPT_PREFIXES) or _in_stdlib(module):
            continue
        for attribute, value in list(getattr(module, "__dict__", {}).items()):
            original = originals.get(id(value))
            if original is not None and (name, attribute) not in _DELIBERATE:
                found.append((name, attribute, original))
    return [f"module {name} holds the unpatched {original} (as {name}.{attribute}): it was "
            "imported before gevent's monkey-patching, so it blocks every connection; import "
            "it after patch_all() (gunicorn's gevent worker patches before loading the app)"
            for name, attribute, original in sorted(found)]


def _in_stdlib(module: Any) -> bool:
    path = getattr(module, "__file__", None)
    return path is None or (path.startswith(_STDLIB) and "site-packages" not in path)


def _blocking_drivers() -> List[str]:
    traps = []
    psycopg2_extensions = sys.modules.get("psycopg2.extensions")
    if psycopg2_extensions is not None and \
            psycopg2_extensions.get_wait_callback() is None:
        traps.append("psycopg2 is imported without a gevent wait callback: every query "
                     "blocks the event loop; install psycogreen and call "
                     "psycogreen.gevent.patch_psycopg() at start-up")
    if "MySQLdb" in sys.modules:
        traps.append("MySQLdb (mysqlclient) is a C driver gevent cannot patch: every query "
                     "blocks the event loop; use PyMySQL (pure Python, patched by gevent)")
    if "pylibmc" in sys.modules:
        traps.append("pylibmc is a C memcached client gevent cannot patch: use "
                     "pymemcache instead")
    return traps
