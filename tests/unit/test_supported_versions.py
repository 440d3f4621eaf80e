"""The documentation's "Supported versions" table and setup.cfg's bounds say what the matrix proves.

The matrix (noxfile.py, tools/matrix.py) runs the whole suite in the ``oldest`` cell under the
pins of constraints/oldest.txt; a lower bound in setup.cfg that differs from that pin would be
a claim nothing tested.
"""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Dict, List, NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUP_CFG = ROOT / "setup.cfg"
VERSIONS_PAGE = ROOT / "docs" / "versions.md"


def _load_matrix():
    # by path: tools/ is not a package (it is not shipped), and a `tools` package installed
    # in the environment would win over a namespace package of that name
    spec = importlib.util.spec_from_file_location("prroom_matrix", ROOT / "tools" / "matrix.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


matrix = _load_matrix()


class Requirement(NamedTuple):
    name: str  # normalised
    specifiers: Dict[str, str]  # operator -> version
    comment: str  # the comment lines right above it in setup.cfg


def requirements(block: str) -> List[Requirement]:
    """The requirements of one setup.cfg list (``install_requires`` or an extra's name)."""
    found, section, key, comment = [], None, None, []
    for line in SETUP_CFG.read_text().splitlines():
        if line.startswith("["):
            section, key = line.strip("[] "), None
        elif line and not line[0].isspace() and not line.startswith("#"):
            key = line.split("=", 1)[0].strip()
        elif key == block and section in ("options", "options.extras_require"):
            text = line.strip()
            if text.startswith("#"):
                comment.append(text)
            elif text:
                spec = re.match(r"([A-Za-z0-9._-]+)(\[[^\]]*\])?\s*([^;]*)", text)
                assert spec is not None, text
                specifiers = dict(re.findall(r"(===|==|>=|<=|~=|!=|<|>)\s*([^\s,]+)",
                                             spec.group(3)))
                found.append(Requirement(matrix.normalise(spec.group(1)), specifiers,
                                         " ".join(comment)))
                comment = []
    assert found, f"no {block} in setup.cfg"
    return found


def same_version(a: str, b: str) -> bool:
    """``2.2`` and ``2.2.0`` are the same release."""
    def strip(key):
        key = list(key)
        while key and key[-1] == 0:
            key.pop()
        return key
    return strip(matrix.version_key(a)) == strip(matrix.version_key(b))


OLDEST = matrix.read_constraints(matrix.CONSTRAINTS_DIR / "oldest.txt")


def test_the_versions_page_renders_the_matrix():
    # docs/versions.md renders matrix.table() when the site is built (the prroom-matrix
    # directive, docs/_ext): the table cannot disagree with constraints/
    page = VERSIONS_PAGE.read_text()
    assert page.count("```{prroom-matrix}\n") == 1
    assert not [line for line in page.splitlines() if line.startswith("| cell |")]
    table = matrix.table().splitlines()
    assert len(table) == 2 + len(matrix.constrained_cells()) + 1
    assert all(f"`{cell.name}`" in matrix.table() for cell in matrix.constrained_cells())


def test_python_requires_is_the_oldest_cells_python():
    found = re.search(r"^python_requires\s*=\s*(.+)$", SETUP_CFG.read_text(), re.M)
    assert found is not None
    python_requires = found.group(1).strip()
    assert python_requires == f">={OLDEST.python}"
    assert OLDEST.python == matrix.NEWEST_PYTHONS[0]
    assert min(matrix.version_key(cell.python) for cell in matrix.cells()) == \
        matrix.version_key(OLDEST.python)


@pytest.mark.parametrize("block", ["install_requires", "test"])
def test_every_lower_bound_is_pinned_in_the_oldest_cell(block):
    for requirement in requirements(block):
        if block == "install_requires":
            assert ">=" in requirement.specifiers, f"{requirement.name}: no lower bound"
        if ">=" not in requirement.specifiers:
            continue
        pinned = OLDEST.pins.get(requirement.name)
        assert pinned is not None, (
            f"{requirement.name}>={requirement.specifiers['>=']} is not tested: pin it in "
            "constraints/oldest.txt and run `nox -s oldest`")
        assert same_version(pinned, requirement.specifiers[">="]), (
            f"setup.cfg says {requirement.name}>={requirement.specifiers['>=']}, the oldest "
            f"cell tests {pinned}")


@pytest.mark.parametrize("block", ["install_requires", "test"])
def test_every_upper_pin_says_why(block):
    for requirement in requirements(block):
        capped = set(requirement.specifiers) & {"<", "<=", "==", "===", "~=", "!="}
        assert not capped or requirement.comment, (
            f"{requirement.name} {requirement.specifiers}: add a comment giving the reason")


def test_no_constrained_cell_is_older_than_setup_cfg_allows():
    bounds = {r.name: r.specifiers[">="] for r in requirements("install_requires")}
    for cell in matrix.constrained_cells():
        for name, version in cell.pins.items():
            if name in bounds:
                assert matrix.version_key(version) >= matrix.version_key(bounds[name]), (
                    cell.name, name)
