"""The compatibility matrix that noxfile.py runs, and the documentation's "Supported versions"
table.

A cell is a fresh environment in which prroom is installed with its test extra and the whole
test suite runs.  ``newest-3.X`` cells take the newest releases pip finds for Python 3.X; every
``constraints/NAME.txt`` is one more cell, ``NAME``, installed under that file's pins on the
Python its ``# python: X.Y`` line names.

``python tools/matrix.py`` prints the table; tests/unit/test_supported_versions.py checks that
The documentation's table and setup.cfg's lower bounds agree with the constraints files.  Standard
library only: noxfile.py and the unit tests both import it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS_DIR = ROOT / "constraints"

NEWEST_PYTHONS = ("3.9", "3.10", "3.11", "3.12", "3.13")

# the table's columns: (normalised PyPI name, heading)
COLUMNS = (
    ("flask", "Flask"),
    ("werkzeug", "Werkzeug"),
    ("flask-socketio", "Flask-SocketIO"),
    ("python-socketio", "python-socketio"),
    ("python-engineio", "python-engineio"),
    ("gevent", "gevent"),
    ("gevent-websocket", "gevent-websocket"),
    ("wsaccel", "wsaccel"),
    ("gunicorn", "gunicorn"),
)

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


class Cell(NamedTuple):
    """One environment of the matrix."""

    name: str
    python: str
    constraints: Optional[Path]  # None: the newest releases
    pins: Dict[str, str]  # normalised name -> pinned version


def normalise(name: str) -> str:
    """PyPI's name normalisation (PEP 503): ``Flask_SocketIO`` -> ``flask-socketio``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def version_key(version: str) -> Tuple[int, ...]:
    """``"3.13"`` -> ``(3, 13)``: orders plain release numbers (all this matrix uses)."""
    return tuple(int(part) for part in re.findall(r"\d+", version))


def read_constraints(path: Path) -> Cell:
    """The cell a constraints file defines; refuses anything but comments and ``name==X``."""
    python, pins = None, {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if line.startswith("#"):
            found = re.match(r"#\s*python:\s*(\d+\.\d+)\s*$", line)
            python = found.group(1) if found else python
            continue
        if not line:
            continue
        pin = _PIN.match(line)
        if pin is None:
            raise ValueError(f"{path}:{number}: expected name==version, got {raw!r}")
        pins[normalise(pin.group(1))] = pin.group(2)
    if python is None:
        raise ValueError(f"{path}: no '# python: X.Y' line")
    return Cell(path.stem, python, path, pins)


def constrained_cells() -> List[Cell]:
    """Cells from ``constraints/*.txt``, oldest Flask first, then by Python."""
    found = [read_constraints(path) for path in CONSTRAINTS_DIR.glob("*.txt")]
    return sorted(found, key=lambda cell: (version_key(cell.pins.get("flask", "999")),
                                           version_key(cell.python), cell.name))


def cells() -> List[Cell]:
    """Every cell: the constrained ones, then ``newest-3.X`` for each supported Python."""
    newest = [Cell(f"newest-{python}", python, None, {}) for python in NEWEST_PYTHONS]
    return constrained_cells() + newest


def table() -> str:
    """The documentation's "Supported versions" table (newest cells share one row)."""
    rows = [["cell", "Python"] + [heading for _, heading in COLUMNS]]
    for cell in constrained_cells():
        rows.append([f"`{cell.name}`", cell.python]
                    + [cell.pins.get(name, "newest") for name, _ in COLUMNS])
    rows.append([f"`newest-{NEWEST_PYTHONS[0]}` … `newest-{NEWEST_PYTHONS[-1]}`",
                 ", ".join(NEWEST_PYTHONS)] + ["newest"] * len(COLUMNS))
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "---|" * len(rows[0]))
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
