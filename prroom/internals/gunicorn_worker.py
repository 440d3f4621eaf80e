"""The gunicorn worker's former dotted path, kept because deployments name it.

``worker_class = "prroom.internals.gunicorn_worker.WebSocketWorker"`` keeps working; the
worker itself lives in :mod:`prroom.transport.worker`.
"""
from prroom.transport.worker import AccessLoggingWebSocketHandler, WebSocketWorker

__all__ = ["AccessLoggingWebSocketHandler", "WebSocketWorker"]
