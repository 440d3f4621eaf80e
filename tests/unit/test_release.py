"""One version, written once: the package metadata, ``prroom --version`` and the changelog
agree with ``prroom.__version__`` (tools/check-release checks the same on a built wheel)."""
import configparser
import re
from pathlib import Path

from click.testing import CliRunner

import prroom
from prroom.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_setup_cfg_reads_the_version_from_the_package():
    metadata = configparser.ConfigParser()
    metadata.read(ROOT / "setup.cfg")
    assert metadata["metadata"]["version"] == "attr: prroom.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.dev\d+)?", prroom.__version__)


def test_prroom_version_prints_it():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"prroom, version {prroom.__version__}"


def test_the_changelog_has_an_unreleased_section_and_the_sdist_ships_it():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    versions = re.findall(r"^## \[(\d[^\]]*)\]", changelog, flags=re.M)
    # a released version has its entry; the one being worked on may not have one yet
    assert all(re.fullmatch(r"\d+\.\d+\.\d+\S*", v) for v in versions)
    assert "include CHANGELOG.md" in (ROOT / "MANIFEST.in").read_text()
