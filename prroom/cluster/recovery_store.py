"""Connection state recovery for a cluster: sessions and recent room packets in Redis.

The same guarantees as :mod:`prroom.core.recovery`, shared by every process of a
deployment, so a client that comes back to another process (its own was restarted, or the
load balancer moved it) is restored there.

* **Offsets** are ``<epoch>-<sequence>``: one counter in Redis for the whole deployment,
  taken by the script that publishes a recoverable room broadcast (:data:`PUBLISH_SCRIPT`,
  run by the clustered manager), which also appends the packet to its room's stream and
  publishes it in the same atomic step.  So the order of a room's stream is the order in
  which every subscribed process receives the room's packets, and an offset says exactly
  what a client has seen.  The epoch is a random value kept in Redis: Redis restarted empty
  means a new epoch, and older offsets are simply unknown.
* **Room streams** (``...:room:<id>``) hold a room's last ``cap`` packets as entries with
  the id ``0-<sequence>``; what the cap pushes out is remembered (``...:dropped:<id>``), so
  a session that missed a dropped packet is not restored at all.  A stream expires when its
  room has been quiet for longer than the window (plus the longest a connection can take
  to be noticed as lost).
* **Sessions** (``...:session:<sha256(pid)>``, the pid itself never reaches Redis) expire
  with the window and are taken out atomically with their "left announced" flag, so a pid is
  one-shot across the whole cluster.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections import deque
from typing import Any, Collection, Deque, Dict, List, Mapping, NamedTuple, Optional, Tuple

from prroom.cluster.presence import Pipeline
from prroom.cluster.urls import keyspace, redis_client
from prroom.core.recovery import MAX_TOKEN_LENGTH, BufferedPacket, Session

#: Seconds a room stream outlives its last packet beyond the window: a packet published
#: just before a connection was noticed as lost (ping timeout) must still be there.
STREAM_MARGIN = 60.0

#: Connections to Redis for sessions and offsets, at most (callers beyond wait their turn).
POOL_SIZE = 16

# KEYS: epoch, sequence, room stream, room dropped-marker; for a send with a
# clientMessageId, its key too.  ARGV: a candidate epoch, message head, message tail (the
# offset goes between, quoted), command (SPUBLISH or PUBLISH), channel, cap, stream
# lifetime in ms; with the send's key, its ack and the window in ms.  Returns the
# sequence; or, publishing nothing, the ack of a first send with the same key.
PUBLISH_SCRIPT = """
if KEYS[5] then
  local first = redis.call('GET', KEYS[5])
  if first then return first end
  redis.call('SET', KEYS[5], ARGV[8], 'PX', ARGV[9])
end
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
local seq = redis.call('INCR', KEYS[2])
local message = ARGV[2] .. '"' .. epoch .. '-' .. string.format('%x', seq) .. '"' .. ARGV[3]
redis.call('XADD', KEYS[3], '0-' .. seq, 'm', message)
if redis.call('XLEN', KEYS[3]) > tonumber(ARGV[6]) then
  local oldest = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)
  redis.call('XDEL', KEYS[3], oldest[1][1])
  redis.call('SET', KEYS[4], oldest[1][1], 'PX', ARGV[7])
end
redis.call('PEXPIRE', KEYS[3], ARGV[7])
redis.call(ARGV[4], ARGV[5], message)
return seq
"""

# KEYS: session, its left-announced flag.  Returns {session or false, flag or false}.
_TAKE = """
local session = redis.call('GET', KEYS[1])
local announced = redis.call('GET', KEYS[2])
redis.call('DEL', KEYS[1], KEYS[2])
return {session, announced}
"""

# KEYS: session, its flag.  ARGV: lifetime in ms.  1 if the session is still stored.
_MARK = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return 0 end
redis.call('SET', KEYS[2], '1', 'PX', ttl)
return 1
"""


# KEYS: the hand-off set.  ARGV: now (ms), session key prefix, most to claim.  Returns the
# records of due sessions nobody restored, marked as announced (so only one process says
# they left, and a later restore announces them joined).
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local claimed = {}
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  local key = ARGV[2] .. member
  local session = redis.call('GET', key)
  local ttl = redis.call('PTTL', key)
  if session and ttl > 0 and not redis.call('GET', key .. ':left') then
    redis.call('SET', key .. ':left', '1', 'PX', ttl)
    table.insert(claimed, session)
  end
end
return claimed
"""


class FirstSend(NamedTuple):
    """A send with a clientMessageId, to publish only if it is the first with that id:
    the check, the ack kept for a retry and the publish are one atomic step in Redis, so a
    retry reaching another process while the first is in flight (or after its process
    stopped) is answered with the first's ack and never published twice."""

    key: str
    #: the ack (JSON) a retry gets
    ack: str


def earlier_ack(reply: object) -> Optional[Dict[str, Any]]:
    """The first send's ack, if :data:`PUBLISH_SCRIPT` answered with one (else None:
    its reply is the new packet's sequence)."""
    if not isinstance(reply, (bytes, str)):
        return None
    try:
        ack = json.loads(reply)
    except ValueError:
        return None
    return ack if isinstance(ack, dict) else None


class RedisRecoveryStore:
    """Sessions and room streams of deployment ``channel`` in the Redis at ``url``."""

    clustered = True

    def __init__(self, url: str, channel: str, window: float, cap: int,
                 max_sessions: int) -> None:
        self.redis = redis_client(url, pool_size=POOL_SIZE, socket_connect_timeout=2,
                                  socket_timeout=2)
        self.window = window
        self.cap = cap
        self.max_sessions = max_sessions
        self.prefix = f"prroom:{keyspace(url, channel)}:recovery:"
        self._epoch_key = self.prefix + "epoch"
        self._seq_key = self.prefix + "seq"
        self._candidate_epoch = secrets.token_hex(4)
        self._epoch: Optional[str] = None
        self._claim = self.redis.register_script(_CLAIM)
        self._handoff_key = self.prefix + "handoff"
        # this process's stored sessions, oldest first: the count bound under a flood
        self._mine: Deque[str] = deque()
        self._pipeline: Optional[Pipeline] = None

    def send_via(self, pipeline: Pipeline) -> None:
        """Make the calls of a connect, join, disconnect and restore through ``pipeline``
        (the message queue's pipelined connection) from now on: they share its writes
        instead of each taking a pooled connection for a round trip of its own."""
        self._pipeline = pipeline

    def _call(self, *command: Any) -> Any:
        pipeline = self._pipeline
        if pipeline is None:
            return self.redis.execute_command(*command)
        return pipeline(*command).wait()

    def _calls(self, *commands: Tuple[Any, ...]) -> List[Any]:
        pipeline = self._pipeline
        if pipeline is None:
            pipe = self.redis.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            return list(pipe.execute())
        tickets = [pipeline(*command) for command in commands]  # one batch, in order
        return [ticket.wait() for ticket in tickets]

    # -- keys -------------------------------------------------------------------------------

    def room_key(self, room: int) -> str:
        """The stream of a room's recent packets."""
        return f"{self.prefix}room:{room}"

    def _dropped_key(self, room: int) -> str:
        return f"{self.prefix}dropped:{room}"

    def _session_key(self, pid: str) -> str:
        return self.prefix + "session:" + _digest(pid)

    # -- publishing (the script runs in the clustered manager's pipeline) -----------------

    def publish_args(self, room: int, head: str, tail: str, command: str, channel: str,
                     once: Optional["FirstSend"] = None) -> Tuple[List[str], List[Any]]:
        """KEYS and ARGV of :data:`PUBLISH_SCRIPT` for one broadcast to ``room``; with
        ``once``, published only if no send with its key was, and its ack kept."""
        lifetime = int((self.window + STREAM_MARGIN) * 1000)
        keys = [self._epoch_key, self._seq_key, self.room_key(room), self._dropped_key(room)]
        args = [self._candidate_epoch, head, tail, command, channel, self.cap, lifetime]
        if once is not None:
            keys.append(once.key)
            args += [once.ack, max(1, int(self.window * 1000))]
        return keys, args

    # -- offsets ----------------------------------------------------------------------------

    def epoch(self) -> Optional[str]:
        """The deployment's current epoch (None until something was published)."""
        value = self.redis.get(self._epoch_key)
        self._epoch = value.decode() if isinstance(value, bytes) else value
        return self._epoch

    def current(self) -> int:
        """The newest sequence issued in the deployment."""
        return int(self._call("GET", self._seq_key) or 0)

    def fresh_marker(self) -> Tuple[int, str]:
        """The offset of a new session: sequence 0 of the current epoch.  A new pid has no
        earlier offsets to refuse, and what a room said before the session joined it is
        excluded by the join's own position; so no round trip once the epoch is known."""
        if self._epoch is None:
            self.marker()  # learns the epoch (or sets it, on a Redis that has none yet)
        return 0, f"{self._epoch}-0"

    def marker(self) -> Tuple[int, str]:
        """An offset that belongs to no packet: everything up to now counts as delivered."""
        seq_raw, _, epoch = self._calls(("GET", self._seq_key),
                                        ("SET", self._epoch_key, self._candidate_epoch, "NX"),
                                        ("GET", self._epoch_key))
        seq = int(seq_raw or 0)
        self._epoch = epoch.decode() if isinstance(epoch, bytes) else epoch
        return seq, f"{self._epoch}-{seq:x}"

    def parse(self, offset: Any) -> Optional[int]:
        """The sequence of an offset of the current epoch, else None (never raises)."""
        if not isinstance(offset, str) or len(offset) > MAX_TOKEN_LENGTH:
            return None
        epoch, _, seq = offset.partition("-")
        if not seq or len(seq) > 16:
            return None
        if epoch != self._epoch and epoch != self.epoch():
            return None
        try:
            value = int(seq, 16)
        except ValueError:
            return None
        return value if value >= 0 and seq == f"{value:x}" else None

    # -- sessions ---------------------------------------------------------------------------

    def persist(self, session: Session, limiter_state: List[Any]) -> None:
        """Keep a disconnected session for the window, for whichever process it returns to."""
        record = {"identity": session.identity, "rooms": session.rooms,
                  "limits": limiter_state, "old_sid": session.old_sid,
                  "min_seq": session.min_seq, "joined": session.joined,
                  "left_announced": session.left_announced, "at": time.time()}
        key = self._session_key(session.pid)
        commands: List[Tuple[Any, ...]] = [
            ("SET", key, json.dumps(record), "PX", max(1, int(self.window * 1000)))]
        self._mine.append(key)
        while len(self._mine) > self.max_sessions:
            commands.append(("DEL", self._mine.popleft()))
        self._calls(*commands)

    def stored_here(self) -> int:
        """Sessions this process stored that are not yet displaced by newer ones (some may
        have expired or been restored since)."""
        return len(self._mine)

    def take(self, pid: Any) -> Optional[Tuple[Session, Any, float]]:
        """Remove and return the session ``pid`` (once, cluster-wide) with its exported
        limiter state and its age in seconds, or None."""
        if not isinstance(pid, str) or not pid or len(pid) > MAX_TOKEN_LENGTH:
            return None
        key = self._session_key(pid)
        raw, announced = self._call("EVAL", _TAKE, 2, key, key + ":left")
        if not raw:
            return None
        try:
            record = json.loads(raw)
            session = Session(pid, record["identity"],
                              {int(room): str(name) for room, name in record["rooms"].items()},
                              None, str(record["old_sid"]), int(record["min_seq"]), 0.0,
                              {int(room): int(seq) for room, seq in record["joined"].items()},
                              bool(record["left_announced"] or announced))
            return session, record["limits"], max(0.0, time.time() - float(record["at"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def mark_left_announced(self, pid: str) -> bool:
        """Record that the session's departure was announced; False if it is gone (restored
        on some process, or expired)."""
        key = self._session_key(pid)
        return bool(self._call("EVAL", _MARK, 2, key, key + ":left"))

    def hand_off(self, pids: Mapping[str, float]) -> None:
        """This process is stopping with these sessions' graces running (pid -> when it
        ends, wall clock): whichever process sweeps first after that announces their
        users as left, unless the session was restored meanwhile."""
        if pids:
            self.redis.zadd(self._handoff_key, {_digest(pid): int(due * 1000)
                                                for pid, due in pids.items()})

    def claim_due(self, limit: int = 100) -> List[Tuple[int, str]]:
        """The (room, username) pairs of handed-off sessions whose grace passed unrestored;
        each is returned to one process only."""
        records = self._claim(keys=[self._handoff_key],
                              args=[int(time.time() * 1000), self.prefix + "session:", limit])
        gone: List[Tuple[int, str]] = []
        for raw in records or ():
            try:
                gone.extend((int(room), str(name))
                            for room, name in json.loads(raw)["rooms"].items())
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
        return gone

    # -- retried sends ------------------------------------------------------------------

    def _sent_key(self, sender: str, room: int, client_id: str) -> str:
        return f"{self.prefix}sent:{room}:" + _digest(f"{sender}\x00{client_id}")

    def first_send(self, sender: str, room: int, client_id: str, ack: Dict[str, Any]
                   ) -> "FirstSend":
        """What makes a send's publish its first and only one (:meth:`publish_args`)."""
        return FirstSend(self._sent_key(sender, room, client_id), json.dumps(ack))

    def remember_sent(self, sender: str, room: int, client_id: str, ack: Dict[str, Any]) -> None:
        """Keep a send's ack for the window, for a retry reaching any process (a send whose
        publish did not keep it: the publish failed, and members here got it directly)."""
        self._call("SET", self._sent_key(sender, room, client_id), json.dumps(ack),
                   "PX", max(1, int(self.window * 1000)), "NX")

    # -- room streams -----------------------------------------------------------------------

    def missed_by_room(self, rooms: Collection[int], after: int,
                       joined: Optional[Mapping[int, int]] = None
                       ) -> Optional[Dict[int, List[BufferedPacket]]]:
        """Each of ``rooms``' packets after ``after`` (and after its join), in order, in one
        read; None if the cap dropped one the session had not seen.  Those that skipped the
        session's old socket are the caller's to leave out (it also wants their sequences)."""
        order = list(rooms)
        since = {room: max(after, (joined or {}).get(room, 0)) for room in order}
        pipe = self.redis.pipeline(transaction=False)
        for room in order:
            pipe.get(self._dropped_key(room))
            pipe.xrange(self.room_key(room), f"0-{since[room] + 1}", "+")
        replies = pipe.execute()
        found: Dict[int, List[BufferedPacket]] = {}
        for index, room in enumerate(order):
            dropped, entries = replies[2 * index], replies[2 * index + 1]
            if dropped and _seq_of(dropped) > since[room]:
                return None
            packets = found[room] = []
            for entry_id, fields in entries:
                packet = decode_packet(_seq_of(entry_id), fields.get(b"m") or fields.get("m"))
                if packet is not None:
                    packets.append(packet)
        return found

    def memory_per_packet(self, rooms: Collection[int]) -> Optional[float]:
        """Bytes of Redis memory per buffered packet over ``rooms``' streams (benchmarks)."""
        total = count = 0
        for room in rooms:
            length = self.redis.xlen(self.room_key(room))
            if length:
                total += int(self.redis.memory_usage(self.room_key(room)) or 0)
                count += length
        return total / count if count else None


def _digest(pid: str) -> str:
    return hashlib.sha256(pid.encode()).hexdigest()


def _seq_of(entry_id: Any) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return int(text.partition("-")[2] or 0)


def decode_packet(seq: int, message: Any) -> Optional[BufferedPacket]:
    """A room packet as the publish script stored (and published) it, or None."""
    try:
        return packet_of(seq, json.loads(message))
    except (ValueError, TypeError):
        return None


def packet_of(seq: int, message: Any) -> Optional[BufferedPacket]:
    """A decoded recoverable message (``{"event", "data": [payload, offset], ...}``) as a
    packet, or None if it is not one."""
    try:
        args = message["data"]
        return BufferedPacket(seq, str(args[-1]), str(message["event"]), args[0],
                              message.get("skip_sid"), 0.0)
    except (KeyError, TypeError, IndexError, AttributeError):
        return None


def split_offset(offset: Any) -> Tuple[Optional[str], Optional[int]]:
    """The epoch and sequence of an offset, whatever its epoch ((None, None) if it is not
    one)."""
    if not isinstance(offset, str):
        return None, None
    epoch, _, seq = offset.rpartition("-")
    try:
        return epoch, int(seq, 16)
    except ValueError:
        return None, None
