"""Presence across a cluster, in Redis: :class:`RedisPresence` (see :mod:`prroom.core.presence`).

Each process counts its own sockets per (room, user) in a hash of its own and adds them into
a cluster-wide hash per room, atomically (Lua); each keeps a heartbeat key with a TTL, and
any survivor reaps a process whose heartbeat expired.  :func:`create_presence` picks the
backend a deployment runs.
"""
from __future__ import annotations

import logging
import threading
import uuid
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

from prroom.cluster.urls import keyspace, redis_client
from prroom.core.presence import CONNECTIONS, Joined, Left, MemoryPresence, Presence

logger = logging.getLogger("prroom")

#: How long the note of a reaped process's users is kept for it to come back to (ms): it
#: outlives any stall worth waiting for, and a dead process's note does not stay forever.
REAPED_NOTE_MS = 24 * 3600 * 1000


def _text(value: "bytes | str") -> str:
    # redis-py returns bytes unless the client was made with decode_responses
    return value.decode() if isinstance(value, bytes) else value


# KEYS[1] = this server's hash, KEYS[2] = the room's users hash, KEYS[3] = the note of this
# server's users that a reaper announced as left; ARGV = field, user, delta, and "1" to get
# the room's users too.  Returns 1 if the user's presence in the room crossed (their first
# socket anywhere came, or their last went), else 0; with the users, {crossed, user, ...}
# (a join's roster in the same round trip as its count); with "2" instead, the user's count
# on every live process (the connection cap's).  This server's share never goes
# below zero: a socket whose count a reaper took away (or Redis lost) is not subtracted
# from other processes' counts of the same user.
_CHANGE = """
local before = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local after = before + tonumber(ARGV[3])
if after > 0 then redis.call('HSET', KEYS[1], ARGV[1], after)
else redis.call('HDEL', KEYS[1], ARGV[1]); after = 0 end
local was = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
local total = was + after - before
if after ~= before then
  if total > 0 then redis.call('HSET', KEYS[2], ARGV[2], total)
  else redis.call('HDEL', KEYS[2], ARGV[2]) end
end
local crossed = 0
if (was <= 0) ~= (total <= 0) then
  crossed = 1
elseif total <= 0 and tonumber(ARGV[3]) < 0 and
    redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 0 then
  -- a last socket Redis had lost count of: the rosters still show the user
  crossed = 1
end
if ARGV[4] == '2' then return math.max(total, 0) end
if ARGV[4] ~= '1' then return crossed end
local reply = redis.call('HKEYS', KEYS[2])
table.insert(reply, 1, crossed)
return reply
"""

# KEYS[1] = the server's hash, KEYS[2] = its heartbeat key, KEYS[3] = the set of servers,
# KEYS[4] = its note of users announced as left; ARGV[1] = users-hash key prefix, ARGV[2] =
# its id, ARGV[3] = the note's lifetime (ms).  The liveness check is part of the reap: a
# server whose heartbeat came back after a survivor saw it missing is not reaped, and of
# several survivors only the one that takes it out of the set reaps it.  Returns nil when it
# did not reap, else the "pr|user" fields whose user no longer has any socket anywhere.
_REAP = """
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
if redis.call('SREM', KEYS[3], ARGV[2]) == 0 then return false end
local gone = {}
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local field, count = fields[i], tonumber(fields[i + 1])
  local sep = string.find(field, '|', 1, true)
  local pr, user = string.sub(field, 1, sep - 1), string.sub(field, sep + 1)
  local key = ARGV[1] .. pr
  local total = redis.call('HINCRBY', key, user, -count)
  if total <= 0 then
    redis.call('HDEL', key, user)
    redis.call('SADD', KEYS[4], field)
    table.insert(gone, field)
  end
end
redis.call('DEL', KEYS[1])
if #gone > 0 then redis.call('PEXPIRE', KEYS[4], ARGV[3]) end
return gone
"""


# Replace this server's contribution with what it really has (after it was reaped, or Redis
# lost or missed updates).  KEYS[1] = this server's hash, KEYS[2] = its note of users a
# reaper announced as left; ARGV[1] = users-hash prefix, ARGV[2] = "1" to report every user
# this turns present (else only those the note names: after Redis lost everything, the
# rosters never heard them leave), then field, user, count triples.  Returns {joined, left}:
# the "pr|user" fields whose presence anywhere this rewrite turned on, and off.
_RESYNC = """
local prefix = ARGV[1]
local function split(field)
  local sep = string.find(field, '|', 1, true)
  return prefix .. string.sub(field, 1, sep - 1), string.sub(field, sep + 1)
end
local was = {}
local function remember(field)
  if was[field] == nil then
    local key, user = split(field)
    was[field] = tonumber(redis.call('HGET', key, user) or '0')
  end
end
local old = redis.call('HGETALL', KEYS[1])
for i = 1, #old, 2 do remember(old[i]) end
for i = 3, #ARGV, 3 do remember(ARGV[i]) end
for i = 1, #old, 2 do
  local key, user = split(old[i])
  if redis.call('HINCRBY', key, user, -tonumber(old[i + 1])) <= 0 then
    redis.call('HDEL', key, user)
  end
end
redis.call('DEL', KEYS[1])
for i = 3, #ARGV, 3 do
  local field, user, count = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  redis.call('HINCRBY', KEYS[1], field, count)
  redis.call('HINCRBY', (split(field)), user, count)
end
local joined, left = {}, {}
for field, before in pairs(was) do
  local key, user = split(field)
  local now = tonumber(redis.call('HGET', key, user) or '0')
  if before <= 0 and now > 0 then
    if ARGV[2] == '1' or redis.call('SISMEMBER', KEYS[2], field) == 1 then
      table.insert(joined, field)
    end
  elseif before > 0 and now <= 0 then
    table.insert(left, field)
  end
end
redis.call('DEL', KEYS[2])
return {joined, left}
"""


class Reply(Protocol):
    """A queued command's outcome (the message queue's ticket)."""

    def wait(self) -> object:
        """The command's reply; raises if it did not reach Redis."""


#: Queues one Redis command (``"EVAL", script, ...``) on a shared, pipelined connection.
Pipeline = Callable[..., Reply]


class RedisPresence:
    """Cluster-wide presence in Redis, with heartbeats so a crashed process is forgotten.

    Updates and roster reads go through a redis-py client (a pool connection and a round
    trip each) until :meth:`send_via` hands in the message queue's pipelined connection.
    """

    clustered = True

    def __init__(self, url: str, channel: str, ttl: float) -> None:

        # Short socket timeouts: a presence update must fail fast when Redis is away,
        # not hang the handler.
        self.redis = redis_client(url, socket_connect_timeout=2, socket_timeout=2)
        self.ttl = ttl
        self.server_id = uuid.uuid4().hex[:12]
        self._prefix = f"prroom:{keyspace(url, channel)}:"
        self._users_prefix = self._prefix + "users:"
        self._mine = f"{self._prefix}server:{self.server_id}"
        self._reaped = self._reaped_note(self.server_id)
        self._change = self.redis.register_script(_CHANGE)
        self._reap = self.redis.register_script(_REAP)
        self._resync = self.redis.register_script(_RESYNC)
        self._healthy = True
        # This process's own counts, the truth Redis is repaired from after an outage.
        self._local: Dict[Tuple[int, str], int] = {}
        self._dirty = False
        self._beats = 0
        self._forgotten = False  # shut down: no more heartbeats, nothing written back
        # A rewrite must not interleave with an update, or the update would count twice:
        # held across the round trip on the client, only while queueing on the pipeline
        # (one connection answers in order, so queued in order is applied in order).
        self._lock = threading.Lock()
        self._pipeline: Optional[Pipeline] = None

    def send_via(self, pipeline: Pipeline) -> None:
        """Send updates, roster reads and rewrites through ``pipeline`` from now on: the
        commands of one event-loop turn share one write and one round trip."""
        self._pipeline = pipeline

    def _apply(self, pull_request_id: int, username: str, delta: int,
               listing: bool = False, total: bool = False) -> Any:
        # the script answers whether the user crossed zero anywhere; with ``listing`` also
        # the room's users; with ``total`` the user's count on every live process instead
        key = (pull_request_id, username)
        keys = [self._mine, self._users_prefix + str(pull_request_id), self._reaped]
        args = [f"{pull_request_id}|{username}", username, delta,
                2 if total else 1 if listing else 0]
        with self._lock:
            count = self._local.get(key, 0) + delta
            if count > 0:
                self._local[key] = count
            else:
                self._local.pop(key, None)
            pipeline = self._pipeline
            try:
                if pipeline is None:
                    return self._change(keys=keys, args=args)
                reply = pipeline("EVAL", _CHANGE, len(keys), *keys, *args)
            except Exception:
                self._dirty = True  # the next heartbeat rewrites our share from _local
                raise
        try:
            return reply.wait()
        except Exception:
            self._dirty = True
            raise

    def add(self, pull_request_id: int, username: str) -> bool:
        """Count one more socket of the user in the room; True if their first anywhere."""
        return int(self._apply(pull_request_id, username, 1)) == 1

    def join(self, pull_request_id: int, username: str) -> Tuple[bool, List[str]]:
        """:meth:`add` and :meth:`members` in one round trip."""
        crossed, *names = self._apply(pull_request_id, username, 1, listing=True)
        return int(crossed) == 1, sorted(_text(name) for name in names)

    def remove(self, pull_request_id: int, username: str) -> bool:
        """Count one socket fewer; True if the user has no socket left in the room (and
        the rosters still show them: not when a reaper already announced them as left)."""
        return int(self._apply(pull_request_id, username, -1)) == 1

    def count_connection(self, identity: str, delta: int) -> int:
        """Count one connection of ``identity`` more (1) or fewer (-1) on this process;
        return its connections on every live process.

        Kept as the members of the pseudo-room :data:`CONNECTIONS`, so a dead process's
        connections are reaped, and a stalled one's rewritten, exactly as its rooms are.
        """
        return int(self._apply(CONNECTIONS, identity, delta, total=True))

    def members(self, pull_request_id: int) -> List[str]:
        """The room's users on every live process, sorted."""
        key = self._users_prefix + str(pull_request_id)
        names: Any = (self.redis.hkeys(key) if self._pipeline is None
                      else self._pipeline("HKEYS", key).wait())
        return sorted(_text(name) for name in names)

    def healthy(self) -> bool:
        """Whether the last heartbeat reached Redis."""
        return self._healthy

    def start(self, spawn: Callable[..., Any], sleep: Callable[..., Any],
              announce_left: Callable[[List[Left]], None],
              announce_joined: Optional[Callable[[List[Joined]], None]] = None) -> None:
        """Heartbeat and reap dead processes every third of the TTL, forever."""
        spawn(self._run, sleep, announce_left, announce_joined)

    def _run(self, sleep: Callable[..., Any], announce_left: Callable[[List[Left]], None],
             announce_joined: Optional[Callable[[List[Joined]], None]]) -> None:
        while not self._forgotten:
            try:
                back, gone = self.heartbeat()
                if gone:
                    announce_left(gone)
                if back and announce_joined is not None:
                    announce_joined(back)
                self._reap_dead(announce_left)
                if not self._healthy:
                    logger.warning("presence: Redis reachable again")
                self._healthy = True
            except Exception as exc:  # Redis away: keep serving, retry next beat
                if self._healthy:
                    logger.error("presence: Redis unreachable (%s); retrying", exc)
                self._healthy = False
            sleep(self.ttl / 3)

    def heartbeat(self) -> Tuple[List[Joined], List[Left]]:
        """Tell the cluster this process is alive for another TTL; repair after outages.

        Returns who the repair turned present in a room (users a reaper announced as left
        while this process, stalled, still had them) and absent (updates that never reached
        Redis), for the caller to announce; both empty when nothing needed repair."""
        alive = f"{self._prefix}alive:{self.server_id}"
        pipe = self.redis.pipeline()
        pipe.exists(alive)
        pipe.set(alive, 1, px=int(self.ttl * 1000))
        pipe.sadd(self._prefix + "servers", self.server_id)
        # after the SET: a reap that ran before it has left its note, none can run after it
        pipe.exists(self._reaped)
        was_alive, _, _, reaped = pipe.execute()
        self._beats += 1
        # Our alive key vanished between beats: Redis restarted empty, or we stalled past
        # the TTL (and were reaped, if a note says so).  Or updates failed while it was
        # unreachable.
        if self._dirty or reaped or (self._beats > 1 and not was_alive):
            # Every user this rewrite makes present is news to the rosters, except after
            # Redis lost everything: nobody was told those users left.
            return self._rewrite(announce_all=bool(was_alive or reaped),
                                 reaped=bool(reaped))
        return [], []

    def _rewrite(self, announce_all: bool, reaped: bool) -> Tuple[List[Joined], List[Left]]:
        """Replace this server's share in Redis with what it really has (``_local``)."""
        rewritten = len(self._local)
        joined, left = self._send_resync(announce_all, self._local)
        logger.warning("presence: rewrote this server's %d memberships into Redis%s; "
                       "%d users back, %d gone", rewritten,
                       " (it had been reaped)" if reaped else "", len(joined), len(left))
        return joined, left

    def _send_resync(self, announce_all: bool,
                     local: Dict[Tuple[int, str], int]) -> Tuple[List[Joined], List[Left]]:
        """Run the rewrite script with ``local`` as this server's share."""
        reply: Optional[Reply] = None
        keys = [self._mine, self._reaped]
        with self._lock:
            args: List[Any] = [self._users_prefix, 1 if announce_all else 0]
            for (pull_request_id, username), count in local.items():
                args += [f"{pull_request_id}|{username}", username, count]
            if self._pipeline is None:
                result: Any = self._resync(keys=keys, args=args)
            else:  # behind every update queued before it, ahead of every later one
                reply = self._pipeline("EVAL", _RESYNC, len(keys), *keys, *args)
            self._dirty = False
        if reply is not None:
            try:
                result = reply.wait()
            except Exception:
                self._dirty = True
                raise
        joined, left = (_memberships(fields) for fields in result)
        return joined, left

    def _reaped_note(self, server_id: str) -> str:
        """The key noting which of ``server_id``'s users its reaper announced as left."""
        return f"{self._prefix}reaped:{server_id}"

    def reap_dead(self) -> List[Left]:
        """Forget processes whose heartbeat expired; return the users who left with them."""
        gone: List[Left] = []
        self._reap_dead(gone.extend)
        return gone

    def _reap_dead(self, announce_left: Callable[[List[Left]], None]) -> None:
        # Each reap's users are announced as soon as its reply is in, with no other Redis
        # call between: the reaped process, if it was only stalled, repairs and announces
        # them as joined once it sees the reap; its news must not overtake ours.
        for raw in self.redis.smembers(self._prefix + "servers"):
            server_id = _text(raw)
            if server_id == self.server_id or \
                    self.redis.exists(f"{self._prefix}alive:{server_id}"):
                continue  # alive (checked again inside the reap: this only saves a script)
            fields = self._reap(keys=[f"{self._prefix}server:{server_id}",
                                      f"{self._prefix}alive:{server_id}",
                                      self._prefix + "servers", self._reaped_note(server_id)],
                                args=[self._users_prefix, server_id, REAPED_NOTE_MS])
            if fields is None:  # its heartbeat came back, or another survivor reaped it
                continue
            logger.warning("presence: reaped server %s (no heartbeat for %.0f s), %d users "
                           "left", server_id, self.ttl, len(fields))
            if fields:
                announce_left(_memberships(fields))

    def forget_self(self) -> None:
        """On graceful shutdown, once every local socket was told to leave: take what is
        still counted here out of the rooms and drop our keys; the heartbeat stops.

        A disconnect still under way then finds its count gone and is not subtracted from
        other processes' counts of the same user; it still says "left" if it was the user's
        last socket anywhere (or hands its grace to the cluster).
        """
        self._forgotten = True
        self._send_resync(False, {})
        pipe = self.redis.pipeline()
        # one key per DEL: a Redis Cluster pipeline refuses a multi-key one
        for key in (f"{self._prefix}alive:{self.server_id}", self._mine, self._reaped):
            pipe.delete(key)
        pipe.srem(self._prefix + "servers", self.server_id)
        pipe.execute()


def _memberships(fields: Any) -> List[Tuple[int, str]]:
    """``(pull_request_id, username)`` of each "pr|user" field a script returned."""
    memberships = []
    for field in fields:
        pr, _, user = _text(field).partition("|")
        memberships.append((int(pr), user))
    return sorted(memberships)


def create_presence(message_queue: Optional[str], channel: str, ttl: float) -> Presence:
    """The presence backend for the configured deployment."""
    if message_queue:
        return RedisPresence(message_queue, channel, ttl)
    return MemoryPresence()
