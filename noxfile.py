"""Compatibility matrix: ``nox`` runs the whole test suite once per cell, each in a fresh
virtual environment into which prroom is installed with its test extra.

Cells (defined in tools/matrix.py): ``newest-3.9`` … ``newest-3.13`` take the newest releases
pip finds; ``oldest``, ``oldest-3.13`` and ``flask-3.0`` install under the pins of
``constraints/<cell>.txt``.  ``nox -l`` lists them; ``nox -s oldest newest-3.13`` runs two;
arguments after ``--`` go to pytest.  Needs each cell's ``python3.X`` (on PATH, or installed by
pyenv) and Node.js with npm for the browser-client tests.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent

_spec = importlib.util.spec_from_file_location("prroom_matrix", ROOT / "tools" / "matrix.py")
matrix = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = matrix
_spec.loader.exec_module(matrix)

nox.options.default_venv_backend = "venv"
# A cell whose Python is missing fails the run instead of being skipped.
nox.options.error_on_missing_interpreters = True

# Printed by each cell, so a log shows what was actually tested.
REPORTED = [name for name, _ in matrix.COLUMNS] + [
    "greenlet", "simple-websocket", "requests", "websocket-client", "pytest"]


def _runs(command: str) -> bool:
    if shutil.which(command) is None:
        return False
    return subprocess.run([command, "-c", ""], capture_output=True).returncode == 0


def _expose_pyenv_pythons() -> None:
    """pyenv's shims run only the versions pyenv has selected; link each other pyenv-installed
    ``python3.X`` into ``.nox/_pythons``, put first on PATH, so that nox finds it."""
    versions = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    links = ROOT / ".nox" / "_pythons"
    for python in sorted({cell.python for cell in matrix.cells()}):
        command = f"python{python}"
        if _runs(command):
            continue
        installed = sorted(versions.glob(f"{python}.*/bin/{command}"),
                           key=lambda path: matrix.version_key(path.parts[-3]))
        if installed:
            links.mkdir(parents=True, exist_ok=True)
            link = links / command
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(installed[-1])
    if links.is_dir():
        os.environ["PATH"] = f"{links}{os.pathsep}{os.environ.get('PATH', '')}"


_expose_pyenv_pythons()


def _cell_session(cell: matrix.Cell):
    def run_cell(session: nox.Session) -> None:
        session.install("--quiet", "--upgrade", "pip")
        constraints = ["-c", str(cell.constraints)] if cell.constraints else []
        session.install("--quiet", *constraints, ".[test]")
        session.run("python", "-c", "import importlib.metadata as m, sys\n"
                    "for name in sys.argv[1:]:\n"
                    "    print(f'{name:18} {m.version(name)}')", *REPORTED)
        if not (ROOT / "tests" / "node" / "node_modules").is_dir():
            session.run("npm", "ci", "--prefix", "tests/node", "--no-audit", "--no-fund",
                        external=True)
        session.run("pytest", *session.posargs)

    run_cell.__doc__ = (f"pins of {cell.constraints.relative_to(ROOT)}" if cell.constraints
                        else "newest releases")
    return run_cell


for _cell in matrix.cells():
    nox.session(name=_cell.name, python=_cell.python)(_cell_session(_cell))
