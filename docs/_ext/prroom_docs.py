"""Sphinx directives that render prroom's reference tables from the code that declares them.

Nothing here is hand-copied: the configuration reference is made from the ``Setting``
declarations of :mod:`prroom.core.config`, the library seams table from
:mod:`prroom.internals.seams`, the supported versions table from ``tools/matrix.py`` (the
compatibility matrix's own module).  A setting declared without a description stops the
build (:class:`sphinx.errors.ExtensionError`), whatever the warning settings.

Each directive produces Markdown that MyST parses in place, so the tables look like the
pages' own.
"""
from __future__ import annotations

from typing import Any, Dict, List

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from prroom_reference import (
    MATRIX_DIRECTIVE,
    ROOT,
    SEAMS_DIRECTIVE,
    SETTINGS_DIRECTIVE,
    Undocumented,
    load_matrix,
    settings_table,
)
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective


class _MarkdownDirective(SphinxDirective):
    """A directive whose output is Markdown, parsed where it stands (MyST pages only)."""

    def markdown(self) -> str:
        raise NotImplementedError

    def run(self) -> List[nodes.Node]:
        container = nodes.container()
        text = self.markdown()
        self.state.nested_parse(StringList(text.splitlines(), source=self.get_source_info()[0]),
                                self.content_offset, container)
        return container.children


class SettingsDirective(_MarkdownDirective):
    """``prroom-settings``: the table of SETTINGS (``:which: app``) or SERVER_SETTINGS
    (``:which: server``), straight from prroom/core/config.py."""

    option_spec = {"which": lambda arg: directives.choice(arg, ("app", "server"))}

    def markdown(self) -> str:
        from prroom.core import config

        self.env.note_dependency(str(ROOT / "prroom" / "core" / "config.py"))
        which = self.options.get("which", "app")
        try:
            return settings_table(config.SETTINGS if which == "app" else config.SERVER_SETTINGS)
        except Undocumented as error:
            raise ExtensionError(str(error)) from None


class SeamsDirective(_MarkdownDirective):
    """``prroom-seams``: the library internals table, ``seams.markdown_table()``."""

    def markdown(self) -> str:
        from prroom.internals import seams

        self.env.note_dependency(str(ROOT / "prroom" / "internals" / "seams.py"))
        return str(seams.markdown_table())


class MatrixDirective(_MarkdownDirective):
    """``prroom-matrix``: the compatibility matrix's cells, ``tools/matrix.py``'s table."""

    def markdown(self) -> str:
        self.env.note_dependency(str(ROOT / "tools" / "matrix.py"))
        return str(load_matrix().table())


def setup(app: Sphinx) -> Dict[str, Any]:
    """Register the directives."""
    app.add_directive(SETTINGS_DIRECTIVE, SettingsDirective)
    app.add_directive(SEAMS_DIRECTIVE, SeamsDirective)
    app.add_directive(MATRIX_DIRECTIVE, MatrixDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
