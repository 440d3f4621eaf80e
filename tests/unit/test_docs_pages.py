"""README stays short and points into docs/; the generated references stay generated.

Sphinx (tools/build-docs, warnings as errors) checks the links between the docs pages; README
is not part of the site, so its links are checked here, with what the site must keep
generating from the code: every CLI command (sphinx-click) and the public API (autodoc).
"""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"


def test_readme_is_short_and_starts_with_the_two_commands():
    assert len(README.splitlines()) <= 200
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    assert blocks[:2] == [
        "python3 -m venv .venv && .venv/bin/pip install -e . && "
        ".venv/bin/gunicorn -c gunicorn.conf.py wsgi:app\n",
        "tools/run-tests\n"]


def test_readme_links_resolve():
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [target for target in targets if "://" not in target]
    assert local, "README links into the documentation"
    assert [target for target in local if not (ROOT / target).exists()] == []
    # every page of the site is reachable from README
    pages = {path.name for path in DOCS.glob("*.md")} - {"index.md", "changelog.md"}
    assert pages <= {Path(target).name for target in local}


def test_every_cli_command_is_rendered_from_its_click_declaration():
    page = (DOCS / "operations.md").read_text()
    assert "```{click} prroom.cli:main\n:prog: prroom\n:nested: full\n```" in page
    assert "```{click} prroom.server.flask_commands:commands\n" in page


def test_the_public_api_is_rendered_from_its_docstrings():
    import prroom

    page = (DOCS / "api.md").read_text()
    for name in prroom.__all__:
        if name.startswith("__"):
            continue
        public = getattr(prroom, name)
        assert f":: {public.__module__}.{public.__qualname__}\n" in page, name
    assert "autoexception:: prroom.core.config.ConfigError" in page


def test_every_metric_has_a_row_on_the_operations_page():
    from prroom.server.metrics import Metrics

    metrics = Metrics()
    metrics.watch_loop(lambda: 0.0, lambda: 0.0)
    metrics.watch_state(lambda: 0, lambda: [], lambda: True)
    metrics.watch_recovery(lambda: 0, lambda: 0)
    metrics.watch_seams(lambda: [])
    # prometheus-client's own *_created series aside
    exposed = {name for name in re.findall(r"^# TYPE (\w+) ", metrics.render().decode(), re.M)
               if not name.endswith("_created")}
    page = (DOCS / "operations.md").read_text()
    rows = {re.sub(r"\{.*", "", name) for name in re.findall(r"^\| `(prroom_[^`]+)` \|", page,
                                                              re.M)}
    assert exposed == rows
