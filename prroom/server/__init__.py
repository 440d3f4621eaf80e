"""The Socket.IO and Flask side: handlers, the extension, HTTP endpoints."""
