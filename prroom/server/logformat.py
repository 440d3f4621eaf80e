"""``PRROOM_LOG_FORMAT=json``: one JSON object per log line, for log shippers."""
from __future__ import annotations

import json
import logging
import time


class JSONFormatter(logging.Formatter):
    """``{"time", "level", "logger", "pid", "message"}`` (+ ``"exc"`` with a traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)
