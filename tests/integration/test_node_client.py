"""The product doc's Complete Example, run with the npm ``socket.io-client`` (Node).

``tests/node/complete_example.js`` plays the doc's example against the real gunicorn server
with two reviewers in one pull request room and a third user in another room, and prints one
JSON line of results; each test below asserts one thing a user of the doc's example would
notice.  The script runs once per server and its results are shared by the tests.

Needs Node.js and ``npm ci --prefix tests/node``; without them these tests fail (they do not
skip: CI must not silently stop checking the JavaScript client).
"""
from __future__ import annotations

import json
import shutil
import subprocess
from typing import Dict, NamedTuple, Optional

import pytest

from tests.support.servers import ROOT

pytestmark = pytest.mark.integration

NODE_DIR = ROOT / "tests" / "node"
SCRIPT = NODE_DIR / "complete_example.js"
RUN_TIMEOUT = 60


class NodeRun(NamedTuple):
    """What one run of complete_example.js printed, or why it could not be used."""

    problem: Optional[str]
    results: dict


_runs: Dict[str, NodeRun] = {}


def _tail(text: str, limit: int = 3000) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


def _run_complete_example(server, pull_request_id: int) -> NodeRun:
    node = shutil.which("node")
    if node is None:
        return NodeRun("node is not on PATH: install Node.js 20+ to run the JavaScript "
                       "client tests", {})
    if not (NODE_DIR / "node_modules" / "socket.io-client").is_dir():
        return NodeRun("tests/node/node_modules is missing (or has no socket.io-client): "
                       "run `npm ci --prefix tests/node` first", {})
    argv = [node, str(SCRIPT.relative_to(ROOT)), server.url, str(pull_request_id)]
    try:
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as err:
        return NodeRun(f"{' '.join(argv)} still running after {RUN_TIMEOUT}s\n"
                       f"stdout: {err.stdout!r}\nstderr: {err.stderr!r}\n"
                       f"server log:\n{_tail(server.log())}", {})
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    try:
        results = json.loads(lines[-1])
    except (IndexError, ValueError):
        return NodeRun(f"{' '.join(argv)} exited {proc.returncode} without a JSON result\n"
                       f"stdout: {proc.stdout!r}\nstderr: {proc.stderr}\n"
                       f"server log:\n{_tail(server.log())}", {})
    results["_returncode"] = proc.returncode
    results["_stderr"] = proc.stderr
    if results.get("error"):  # a timeout or crash: the checks after that step never ran
        return NodeRun(f"complete_example.js stopped at step {results.get('step')!r}: "
                       f"{results['error']}\nstderr: {proc.stderr}\n"
                       f"server log:\n{_tail(server.log())}", results)
    return NodeRun(None, results)


@pytest.fixture
def node_run(server, pr_id) -> NodeRun:
    """complete_example.js run against ``server`` (once per server; the tests share it)."""
    run = _runs.get(server.url)
    if run is None:
        run = _runs[server.url] = _run_complete_example(server, pr_id)
    return run


def _results(run: NodeRun) -> dict:
    """The script's JSON results; a missing Node setup or a broken run FAILS the test.

    Called in the test body rather than in the fixture so that it is a failure (not a setup
    error).
    """
    if run.problem:
        pytest.fail(run.problem, pytrace=False)
    return run.results


def _check(results: dict, name: str) -> dict:
    """The named check of the script, asserted to have passed; returns its details."""
    check = results["checks"].get(name)
    assert check is not None, f"complete_example.js reported no {name!r} check: {results}"
    assert check["ok"], f"{name}: {check['why']}\n{json.dumps(check, indent=2)}"
    return check


def test_script_runs_the_complete_example_successfully(node_run):
    node_results = _results(node_run)
    assert node_results["_returncode"] == 0, (
        f"complete_example.js exited {node_results['_returncode']}: "
        f"{node_results['failures']}\nstderr: {node_results['_stderr']}")
    assert node_results["ok"] is True and node_results["failures"] == []


def test_both_room_members_receive_the_message_with_the_docs_fields(node_run):
    node_results = _results(node_run)
    pull_request_id = node_results["pullRequestId"]
    check = _check(node_results, "roomMessageToBoth")
    for received in (check["sender"], check["reviewer"]):
        assert received["username"] == "johndoe"
        assert received["message"] == "This looks great! Approved."
        assert received["pullRequestId"] == pull_request_id
    assert check["sender"]["id"] == check["reviewer"]["id"]
    shown = _check(node_results, "docListenerOutput")
    # the doc: 'Example output: "johndoe: This looks great! Approved."'
    assert "johndoe: This looks great! Approved." in shown["sender"]
    assert "johndoe: This looks great! Approved." in shown["reviewer"]


def test_a_new_member_gets_no_history(node_run):
    node_results = _results(node_run)
    check = _check(node_results, "noHistoryReplayed")
    assert check["johnFirstEvent"]["data"]["username"] == "johndoe"


def test_another_room_receives_nothing_from_this_room(node_run):
    node_results = _results(node_run)
    check = _check(node_results, "otherRoomHearsNothing")
    other = node_results["otherPullRequestId"]
    first_two = check["carolEvents"][:2]
    assert [e["event"] for e in first_two] == ["pr-room-message", "pr-room-message"]
    assert all(e["data"]["pullRequestId"] == other and e["data"]["username"] == "carol"
               for e in first_two), first_two
    foreign = _check(node_results, "roomHearsNothingFromOtherRoom")
    assert foreign["johndoe"] == [] and foreign["janedoe"] == []


def test_typing_reaches_the_other_member_but_not_the_typist(node_run):
    node_results = _results(node_run)
    pull_request_id = node_results["pullRequestId"]
    check = _check(node_results, "typingReachesOthers")
    events = check["johndoeEvents"]
    assert [e["event"] for e in events] == ["typing", "stop-typing", "pr-room-message"]
    assert events[0]["data"] == {"pullRequestId": pull_request_id, "username": "janedoe"}
    assert events[1]["data"] == {"pullRequestId": pull_request_id, "username": "janedoe"}
    echoed = _check(node_results, "typingNotEchoedToSender")
    assert [e["event"] for e in echoed["janedoeEvents"]] == ["pr-room-message"]


def test_a_non_member_send_yields_pr_room_error_not_a_member(node_run):
    node_results = _results(node_run)
    error = _check(node_results, "nonMemberGetsError")["error"]
    assert error["ok"] is False
    assert error["event"] == "send-message-to-pr-room"
    assert error["error"]["code"] == "not-a-member"
    assert error["pullRequestId"] == node_results["pullRequestId"]


def test_acks_answer_when_a_callback_is_given(node_run):
    node_results = _results(node_run)
    success = _check(node_results, "ackOnSuccess")
    assert success["joinAck"]["ok"] is True
    assert success["sendAck"]["ok"] is True
    assert success["sendAck"]["id"] == success["broadcast"]["id"]
    refusal = _check(node_results, "ackOnRefusal")
    assert refusal["ack"]["ok"] is False
    assert refusal["ack"]["error"]["code"] == "not-a-member"
    # refused through the ack only: no pr-room-error event as well
    assert [e["event"] for e in refusal["carolEventsAfter"]] == ["pr-room-message"]


def test_a_default_transport_client_upgrades_and_chats(node_run):
    node_results = _results(node_run)
    check = _check(node_results, "defaultTransportsChat")
    assert check["handshakeTransport"] == "polling"
    assert check["upgradedTo"] == "websocket"
    assert "johndoe: Welcome, bob." in check["bobDisplayed"]


def test_the_complete_example_verbatim_send_before_join_is_refused_visibly(node_run):
    # The doc calls sendMessage() before the socket connects; socket.io-client flushes that
    # buffered emit before the 'connect' handler joins.  Join-before-send is the rule, so the
    # user must hear why the message went nowhere: pr-room-error not-a-member.
    check = _check(_results(node_run), "docExampleVerbatim")
    assert "johndoe: Second message, sent after connecting." in check["displayed"]
