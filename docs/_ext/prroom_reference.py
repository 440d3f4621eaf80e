"""The reference tables of prroom's documentation, made from the declarations in the code.

Kept apart from the Sphinx extension (prroom_docs.py) so the tests can hold the generator
to the declarations without Sphinx installed (tests/unit/test_settings_readme.py).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parents[2]

#: The directives' names; the tests hold the pages to using them.
SETTINGS_DIRECTIVE = "prroom-settings"
SEAMS_DIRECTIVE = "prroom-seams"
MATRIX_DIRECTIVE = "prroom-matrix"


class Undocumented(ValueError):
    """A setting declared without a description: the build stops on it."""


def _cell(text: str) -> str:
    """``text`` made safe for one cell of a Markdown table."""
    return " ".join(str(text).split()).replace("|", "\\|")


def shown_default(value: Any) -> str:
    """A declared default as an operator would write it in the environment."""
    if value is None or value == "":
        return "*(empty)*"
    if isinstance(value, tuple):
        value = ",".join(str(part) for part in value)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def settings_table(settings: Iterable[Any]) -> str:
    """The configuration reference as a Markdown table: key, default, accepted values,
    description.  Raises :class:`Undocumented` for a setting without a description."""
    lines = ["| key | default | accepted | description |", "|---|---|---|---|"]
    for setting in settings:
        if not (setting.description or "").strip():
            raise Undocumented(f"{setting.key} is declared without a description "
                               "(prroom/core/config.py): every setting is documented there")
        extra = " (secret: shown masked)" if setting.secret else ""
        flag = f" (`prroom serve --{setting.name.replace('_', '-')}`)" if setting.flag else ""
        lines.append(f"| `{setting.key}` | "
                     f"{_cell(shown_default(setting.default))} | {_cell(setting.expected())} | "
                     f"{_cell(setting.description)}{extra}{_cell(flag)} |")
    return "\n".join(lines)


def load_matrix() -> Any:
    """tools/matrix.py, loaded by path (tools/ is not a package)."""
    name = "prroom_docs_matrix"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / "matrix.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
