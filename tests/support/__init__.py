"""What the tests share: servers (prroom under gunicorn, a private redis-server), clients,
the chat page in chromium, ``wait_until``, and a clean ``PRROOM_*`` environment.

conftest.py files only wire these into fixtures."""
