"""Delete one name a seam relies on before prroom loads, then start prroom as the worker does.

Run as a script: ``python -m tests.support.seam_probe TOUCH [ACCEPT_MISSING]``.  It patches
with gevent and imports the libraries, deletes the name TOUCH (an attribute of a module or
class, or one each instance gets in ``__init__``: the syntax of
:attr:`prroom.internals.seams.Seam.touches`), imports prroom, builds the app under gevent,
checks the worker's seam, and prints one JSON line: whether prroom started, its refusal (one
line) or the seam WARNING lines it logged, and any traceback.  A release that drops the name
looks like this.
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import importlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from typing import Any, Dict, List  # noqa: E402

import flask_socketio  # noqa: E402,F401 - the libraries load before the probe, as in a worker
import geventwebsocket.gunicorn.workers  # noqa: E402,F401
import gunicorn.workers.ggevent  # noqa: E402,F401
import socketio  # noqa: E402,F401


def delete(touch: str) -> None:
    """Remove what ``touch`` (``module:Attr.chain`` or ``module:Class#attr``) names."""
    path, _, instance_attr = touch.partition("#")
    module_name, _, chain = path.partition(":")
    owner: Any = importlib.import_module(module_name)
    parts = chain.split(".")
    for part in parts[:-1]:
        owner = getattr(owner, part)
    if instance_attr:
        cls = getattr(owner, parts[-1])
        init = cls.__init__

        def init_without(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            vars(self).pop(instance_attr, None)
        cls.__init__ = init_without
        return
    if isinstance(owner, type):  # the class in the MRO that defines it
        owner = next(k for k in owner.__mro__ if parts[-1] in vars(k))
    delattr(owner, parts[-1])


def probe(touch: str, accept: str) -> Dict[str, Any]:
    """In this (child) process: delete ``touch``, then start prroom; what happened."""
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setLevel(logging.WARNING)
    logging.getLogger().addHandler(handler)
    result: Dict[str, Any] = {"touch": touch, "started": False, "refusal": None,
                              "traceback": None}
    try:
        delete(touch)
        from prroom.internals.seams import SEAMS
        # an inherited definition still answers for it: nothing for prroom to notice
        result["still_there"] = "#" not in touch and not any(
            touch in seam.missing() for seam in SEAMS if touch in seam.touches)
        from prroom.app import create_app
        from prroom.internals import seams
        from prroom.transport import worker as gunicorn_worker  # noqa: F401 - must import
        config = {"PRROOM_ASYNC_MODE": "gevent", "PRROOM_AUTH_MODE": "token",
                  "PRROOM_SECRET_KEY": "probe", "PRROOM_ACCEPT_MISSING": accept}
        try:
            from prroom.transport.served_app import served_app
            served_app(create_app(config=config))
            seams.apply("gunicorn-worker", lambda: True,
                        accepted=seams.parse_accepted(accept.split(",") if accept else ()))
            result["started"] = True
        except Exception as exc:  # noqa: BLE001 - the refusal is the answer, if it is one
            if type(exc).__name__ not in ("ConfigError", "SeamRefused"):
                raise
            result["refusal"] = str(exc)
    except BaseException:  # noqa: BLE001 - anything else is what the test must not see
        result["traceback"] = traceback.format_exc()
    result["warnings"] = [line for line in log.getvalue().splitlines() if "seam" in line]
    return result


def main(argv: List[str]) -> None:
    """``seam_probe TOUCH [ACCEPT_MISSING]``: print what :func:`probe` found, as JSON."""
    print(json.dumps(probe(argv[1], argv[2] if len(argv) > 2 else "")), flush=True)


if __name__ == "__main__":
    main(sys.argv)
