"""Sphinx configuration of prroom's documentation (tools/build-docs builds it)."""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's prroom, whatever is installed
sys.path.insert(0, str(HERE / "_ext"))

import prroom  # noqa: E402

project = "prroom"
author = "prroom's authors"
copyright = "prroom's authors"
release = version = prroom.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx_click",
    "prroom_docs",
]
source_suffix = {".md": "markdown"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
exclude_patterns = ["_build", "README.md"]

# quotes are code here ('self', 'none'), never typography
smartquotes = False

html_theme = "furo"
html_title = f"prroom {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
nitpicky = True
# names from libraries whose inventories the build does not fetch (it runs offline)
nitpick_ignore_regex = [
    (r"py:.*", r"(flask|flask_socketio|socketio|engineio|werkzeug|gevent|redis|click)\..*"),
    (r"py:.*", r"(Flask|SocketIO|Request|Callable|Any|Optional|Iterable|Mapping|Sequence)"),
    (r"py:class", r"(typing|collections\.abc)\..*"),
    # prroom's internal objects a public signature names; their modules are not API
    (r"py:class", r"(Settings|ChatMessage|RoomRegistry|RoomEvents|Presence|Metrics)"),
    # an alias the posting docstring names; the class is documented where it is defined
    (r"py:class", r"prroom\.cluster\.managers\.QueueUnavailable"),
    (r"py:class", r"prroom\.(core\.config\.Settings|core\.rooms\.RoomRegistry|"
                  r"server\.events\.RoomEvents|core\.presence\.Presence|"
                  r"server\.metrics\.Metrics|core\.messages\.ChatMessage)"),
]
