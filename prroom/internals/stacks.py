"""CPython's frame introspection: the loop monitor's reach into ``sys``'s private functions.

``sys._getframe`` labels the frame that serves a request or an event (CPython's own
``logging`` relies on it too); ``sys._current_frames`` lets the watchdog thread read the
stack of the code holding the event loop.  An interpreter without them gives warnings with
no stack (the ``loop-monitor-stacks`` seam falls back), never an ImportError.
"""
from __future__ import annotations

import sys
from types import FrameType
from typing import Any, Callable, Dict, Optional


def _no_frame(depth: int = 0) -> Any:
    return None


#: ``sys._getframe``: the caller's frame, ``depth`` levels up.
getframe: Callable[[int], Any] = getattr(sys, "_getframe", _no_frame)
#: ``sys._current_frames``, or None where the interpreter has none.
current_frames: Optional[Callable[[], Dict[int, FrameType]]] = getattr(
    sys, "_current_frames", None)


def available() -> bool:
    """Whether the watchdog can read another thread's stack."""
    return current_frames is not None
