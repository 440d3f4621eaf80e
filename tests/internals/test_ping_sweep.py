"""prroom.transport.ping_wheel: pings from one wheel per event loop, ping timeouts from one
sweep, and the python-engineio internals they replace.

The first tests fail loudly when python-engineio changes how it pings or runs its service
task (prroom would then quietly keep the library's own tasks, or ping twice).
"""
import inspect
import time

import engineio
import gevent
import socketio
from engineio import packet

from prroom.transport import ping_wheel as ping_sweep
from prroom.transport import writes as websocket_writes

# -- what the wheel and the sweep stand in for -------------------------------------------


def test_engineio_still_pings_from_a_background_task():
    assert engineio.socket.Socket._send_ping.__qualname__ == ping_sweep.PING_QUALNAME
    assert "start_background_task(self._send_ping)" in \
        inspect.getsource(engineio.socket.Socket.schedule_ping)
    send_ping = inspect.getsource(engineio.socket.Socket._send_ping)
    # what the wheel does instead: the same wait, checks and packet
    assert "self.server.sleep(self.server.ping_interval)" in send_ping
    assert "if not self.closing and not self.closed:" in send_ping
    assert "self.last_ping = time.time()" in send_ping
    assert "self.send(packet.Packet(packet.PING))" in send_ping


def test_engineio_still_checks_ping_timeouts_from_its_service_task():
    assert engineio.Server._service_task.__qualname__ == ping_sweep.SERVICE_QUALNAME
    connect = inspect.getsource(engineio.Server._handle_connect)
    assert "if self.start_service_task:" in connect
    assert "self.start_background_task(\n                self._service_task)" in connect
    task = inspect.getsource(engineio.Server._service_task)
    # what the sweep does instead, for every socket at once
    assert "del self.sockets[s.sid]" in task and "s.check_ping_timeout()" in task
    assert "elif not s.closing:" in task


def test_check_ping_timeout_still_closes_an_overdue_socket():
    server = engineio.Server(async_mode="gevent")
    reasons = []
    server.on("disconnect", lambda sid, reason: reasons.append(reason))
    sock = engineio.socket.Socket(server, "sid")
    sock.last_ping = time.time() - server.ping_timeout - 1
    assert sock.check_ping_timeout() is False
    assert sock.closed and reasons == [server.reason.PING_TIMEOUT]
    assert sock.queue.get_nowait() is None  # the writer's end


def _installed():
    """An engine.io server with prroom's writes (and so the wheel), one socket of it, and
    the wheel its pings go into."""
    server = socketio.Server(async_mode="gevent")
    assert websocket_writes.install(server) is True
    eio = server.eio
    return eio, engineio.socket.Socket(eio, "sid"), \
        ping_sweep.PingWheel.of_current_hub(eio.ping_interval)


def test_install_hands_pings_and_the_service_task_over():
    eio, sock, wheel = _installed()
    before = wheel.pending()
    handle = eio.start_background_task(sock._send_ping)
    assert wheel.pending() == before + 1
    handle.join()
    service = eio.start_background_task(eio._service_task)
    assert isinstance(service, ping_sweep._Sweeper)
    service.join()
    service._timer.close()
    results: list = []
    eio.start_background_task(results.append, 1).join()  # anything else: a greenlet
    assert results == [1]


def test_engineio_still_takes_a_pong_as_schedule_ping_and_a_log_line():
    receive = inspect.getsource(engineio.socket.Socket.receive)
    # what answer_pong does instead (the log line only when that logger would write it)
    assert "self.server.logger.info('%s: Received packet %s data %s'" in receive
    assert "if pkt.packet_type == packet.PONG:\n            self.schedule_ping()" in receive
    schedule = inspect.getsource(engineio.socket.Socket.schedule_ping)
    assert "if self.last_ping:\n            self.last_ping = None" in schedule


def test_a_pong_is_answered_straight_into_the_wheel_once_per_ping():
    eio, sock, wheel = _installed()
    before = wheel.pending()
    sock.last_ping = time.time()  # a ping went out
    assert ping_sweep.answer_pong(sock) is True
    assert sock.last_ping is None and wheel.pending() == before + 1  # the next one is due
    assert ping_sweep.answer_pong(sock) is True  # a second pong for the same ping
    assert wheel.pending() == before + 1  # ... schedules nothing more, as schedule_ping
    # a logger that logs every packet: the library's path, which writes that line
    level = eio.logger.level
    eio.logger.setLevel("INFO")
    try:
        sock.last_ping = time.time()
        assert ping_sweep.answer_pong(sock) is False and sock.last_ping is not None
    finally:
        eio.logger.setLevel(level)


def test_a_pong_to_a_server_whose_pings_the_wheel_does_not_send_takes_the_librarys_path():
    eio = engineio.Server(async_mode="gevent")
    sock = engineio.socket.Socket(eio, "sid")
    sock.last_ping = time.time()
    assert ping_sweep.answer_pong(sock) is False and sock.last_ping is not None


# -- the wheel ---------------------------------------------------------------------------

class FakeSocket:
    """What the wheel reads and calls on an Engine.IO socket."""

    def __init__(self):
        self.closing = self.closed = False
        self.last_ping = None
        self.sent = []

    def send(self, pkt):
        self.sent.append((time.monotonic(), pkt))


def test_pings_go_out_one_interval_later_never_early_and_at_most_a_tick_late():
    interval = 0.2
    wheel = ping_sweep.PingWheel(gevent.get_hub(), interval)
    sockets = [FakeSocket() for _ in range(50)]
    scheduled = []
    for sock in sockets:
        scheduled.append(time.monotonic())
        wheel.schedule(sock)
        gevent.sleep(0.002)
    gevent.sleep(interval + 0.1 + 2 * wheel.tick)
    for sock, at in zip(sockets, scheduled):
        assert len(sock.sent) == 1
        late = sock.sent[0][0] - at - interval
        assert late >= 0
        assert late < wheel.tick + 0.05  # the tick, plus a busy machine's slack
        assert sock.last_ping is not None
    pings = {id(pkt) for sock in sockets for _, pkt in sock.sent}
    assert len(pings) == 1  # one packet, so one frame, for all of them
    assert sockets[0].sent[0][1].packet_type == packet.PING
    assert wheel.pending() == 0 and wheel._timer is None  # no timer while nothing is due


def test_closing_and_closed_sockets_get_no_ping():
    wheel = ping_sweep.PingWheel(gevent.get_hub(), 0.05)
    closing, closed, live = FakeSocket(), FakeSocket(), FakeSocket()
    for sock in (closing, closed, live):
        wheel.schedule(sock)
    closing.closing, closed.closed = True, True
    gevent.sleep(0.05 + 3 * wheel.tick)
    assert closing.sent == closed.sent == [] and len(live.sent) == 1


def test_a_socket_that_fails_to_send_does_not_stop_the_others(caplog):
    wheel = ping_sweep.PingWheel(gevent.get_hub(), 0.05)
    broken, fine = FakeSocket(), FakeSocket()
    broken.send = lambda pkt: 1 / 0  # type: ignore[method-assign]
    wheel.schedule(broken)
    wheel.schedule(fine)
    gevent.sleep(0.05 + 3 * wheel.tick)
    assert len(fine.sent) == 1
    assert "sending a ping failed" in caplog.text


def test_ticks_are_a_small_part_of_the_interval():
    assert ping_sweep.tick_of(25) == 0.05
    assert ping_sweep.tick_of(0.3) == 0.3 / 20
    assert ping_sweep.tick_of(0.01) == 0.005


# -- the sweep ---------------------------------------------------------------------------

def test_the_sweep_forgets_closed_sockets_and_closes_overdue_ones():
    server = engineio.Server(async_mode="gevent", ping_timeout=0.1)
    reasons = []
    server.on("disconnect", lambda sid, reason: reasons.append((sid, reason)))
    fresh, overdue, waiting, gone = (engineio.socket.Socket(server, sid)
                                     for sid in ("fresh", "overdue", "waiting", "gone"))
    fresh.last_ping = None  # answered its last ping
    overdue.last_ping = time.time() - 1
    waiting.last_ping = time.time()  # pinged just now; its pong may still come
    gone.closed = True
    for sock in (fresh, overdue, waiting, gone):
        server.sockets[sock.sid] = sock
    sweeper = ping_sweep._Sweeper(server)
    try:
        sweeper.sweep()
        gevent.sleep(0.01)  # the overdue ones are closed in a greenlet, not in the hub
        assert set(server.sockets) == {"fresh", "overdue", "waiting"}
        assert reasons == [("overdue", server.reason.PING_TIMEOUT)] and overdue.closed
        assert not fresh.closed and not waiting.closed
        # the timer sweeps again by itself: "waiting" never answers
        deadline = time.monotonic() + 5
        while not waiting.closed and time.monotonic() < deadline:
            gevent.sleep(0.02)
        assert waiting.closed and not fresh.closed
    finally:
        sweeper._timer.close()
