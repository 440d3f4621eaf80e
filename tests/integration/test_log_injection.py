"""Client text cannot forge log lines: a real client against a real gunicorn, text and JSON."""
from __future__ import annotations

import json

import pytest

from tests.support import servers
from tests.support.clients import Clients
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

FORGED = "[2026-01-01 00:00:00 +0000] [1] [WARNING] FORGED admin logged in"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_forged_event_name_stays_inside_its_own_line(log_format):
    env = {"PRROOM_LOG_FORMAT": log_format}
    with servers.running(env=env) as proc, Clients(proc) as connect:
        client = connect(headers={"X-Forwarded-For": "10.0.0.1\x1b[2J"})
        ack = client.call("x\n" + FORGED + "\r\n" + "y" * 5000, {"pullRequestId": 1})
        assert ack["error"]["code"] == "unknown-event"
        client.join(1, "alice")  # logged after the refusal: the refusal is in the log
        assert wait_until(lambda: "alice" in proc.log(), 10)
        lines = proc.log().splitlines()
    forged = [line for line in lines if "FORGED" in line]
    assert len(forged) == 1, forged  # in the refusal's own line, not one of its own
    messages = [json.loads(line)["message"] for line in lines if line.startswith("{")] \
        if log_format == "json" else lines
    refusal = next(message for message in messages if "FORGED" in message)
    assert "refused x\\n[2026-01-01" in refusal and "\\r\\nyyy" in refusal
    assert "...(+" in refusal and len(refusal) < 600  # 5,000 characters sent
    connect_line = next(message for message in messages if "connect sid=" in message)
    assert "addr=10.0.0.1\\x1b[2J" in connect_line
    assert not any("\x1b" in message for message in messages)
