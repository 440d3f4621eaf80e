"""What the tests share: servers (prroom under gunicorn, a private redis-server), clients,
raw Engine.IO / Socket.IO speakers (``raw``: over real sockets; ``wsgi``: in process), the
npm socket.io-client scripts (``node``), the chat page in chromium, ``wait_until``, and a
clean ``PRROOM_*`` environment.

conftest.py files only wire these into fixtures."""
