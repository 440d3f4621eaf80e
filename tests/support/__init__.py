"""Helpers shared by the tests: real server processes and real Socket.IO clients."""
