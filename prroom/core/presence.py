"""Who is in each room across the whole service: one member per user, however many tabs.

Two backends with one interface:

- :class:`MemoryPresence`, for a single process (the default).
- :class:`RedisPresence`, for a cluster sharing ``PRROOM_MESSAGE_QUEUE``.  Each process counts
  its own sockets per (room, user) in a hash of its own and adds them into a cluster-wide
  hash per room, atomically (Lua), so "joined" is announced on a user's first socket anywhere
  and "left" on their last.  Each process keeps a heartbeat key with a TTL; any survivor
  reaps a process whose heartbeat expired (SIGKILL, lost host): it subtracts that process's
  counts and announces who left.  No Socket.IO imports here: announcements go through the
  ``announce_left`` callback the event layer passes in.
"""
from __future__ import annotations

import logging
import threading
import uuid
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

from prroom.core.redis_urls import keyspace, redis_client

logger = logging.getLogger("prroom")

Left = Tuple[int, str]  # (pull_request_id, username) that nobody in the cluster has any more

#: The pseudo pull request (no real one has id 0) whose "members" are authenticated
#: identities, one count per open connection: the cluster-wide connection cap's counter.
CONNECTIONS = 0


def _text(value: "bytes | str") -> str:
    # redis-py returns bytes unless the client was made with decode_responses
    return value.decode() if isinstance(value, bytes) else value


class Presence(Protocol):
    """What the event layer needs of a presence backend (both classes below provide it)."""

    clustered: bool

    def add(self, pull_request_id: int, username: str) -> bool:
        """Count one more socket of the user; True if it is their first in the room."""

    def join(self, pull_request_id: int, username: str) -> Tuple[bool, List[str]]:
        """:meth:`add`, and the room's users sorted (the joiner included), at once."""

    def remove(self, pull_request_id: int, username: str) -> bool:
        """Count one socket fewer; True if it was the user's last in the room."""

    def members(self, pull_request_id: int) -> List[str]:
        """The room's users, sorted."""

    def start(self, spawn: Callable[..., Any], sleep: Callable[[float], None],
              announce_left: Callable[[List[Left]], None]) -> None:
        """Start whatever the backend runs in the background."""

    def healthy(self) -> bool:
        """Whether the backend is reachable."""


class MemoryPresence:
    """Presence for one process: ``{pull_request_id: {username: sockets}}``."""

    clustered = False

    def __init__(self) -> None:
        self._counts: Dict[int, Dict[str, int]] = {}
        self._lock = threading.Lock()

    def add(self, pull_request_id: int, username: str) -> bool:
        """Count one more socket of ``username`` in the room; True if it is their first."""
        with self._lock:
            users = self._counts.setdefault(pull_request_id, {})
            users[username] = users.get(username, 0) + 1
            return users[username] == 1

    def join(self, pull_request_id: int, username: str) -> Tuple[bool, List[str]]:
        """:meth:`add`, and the room's users sorted."""
        return self.add(pull_request_id, username), self.members(pull_request_id)

    def remove(self, pull_request_id: int, username: str) -> bool:
        """Count one socket fewer; True if that was the user's last in the room."""
        with self._lock:
            users = self._counts.get(pull_request_id, {})
            remaining = users.get(username, 0) - 1
            if remaining > 0:
                users[username] = remaining
                return False
            users.pop(username, None)
            if not users:
                self._counts.pop(pull_request_id, None)
            return True

    def members(self, pull_request_id: int) -> List[str]:
        """The room's users, sorted."""
        return sorted(self._counts.get(pull_request_id, ()))

    def start(self, spawn: Callable, sleep: Callable,
              announce_left: Callable[[List[Left]], None]) -> None:
        """Nothing runs in the background for one process."""

    def healthy(self) -> bool:
        """Always reachable."""
        return True


# KEYS[1] = this server's hash, KEYS[2] = the room's users hash; ARGV = field, user, delta,
# and "1" to get the room's users too: {total, user, ...} instead of total (a join's roster
# in the same round trip as its count).
_CHANGE = """
local mine = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[3])
if mine <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
local total = redis.call('HINCRBY', KEYS[2], ARGV[2], ARGV[3])
if total <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
if ARGV[4] ~= '1' then return total end
local reply = redis.call('HKEYS', KEYS[2])
table.insert(reply, 1, total)
return reply
"""

# KEYS[1] = the dead server's hash; ARGV[1] = users-hash key prefix.  Returns the
# "pr|user" fields whose user no longer has any socket anywhere.
_REAP = """
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
    table.insert(gone, field)
  end
end
redis.call('DEL', KEYS[1])
return gone
"""


# Replace this server's contribution with what it really has (after Redis lost or missed
# updates).  KEYS[1] = this server's hash; ARGV[1] = users-hash prefix, then field, user,
# count triples.
_RESYNC = """
local old = redis.call('HGETALL', KEYS[1])
for i = 1, #old, 2 do
  local field, count = old[i], tonumber(old[i + 1])
  local sep = string.find(field, '|', 1, true)
  local key = ARGV[1] .. string.sub(field, 1, sep - 1)
  local user = string.sub(field, sep + 1)
  if redis.call('HINCRBY', key, user, -count) <= 0 then redis.call('HDEL', key, user) end
end
redis.call('DEL', KEYS[1])
for i = 2, #ARGV, 3 do
  local field, user, count = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local sep = string.find(field, '|', 1, true)
  redis.call('HINCRBY', KEYS[1], field, count)
  redis.call('HINCRBY', ARGV[1] .. string.sub(field, 1, sep - 1), user, count)
end
return 1
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
        self._change = self.redis.register_script(_CHANGE)
        self._reap = self.redis.register_script(_REAP)
        self._resync = self.redis.register_script(_RESYNC)
        self._healthy = True
        # This process's own counts, the truth Redis is repaired from after an outage.
        self._local: Dict[Tuple[int, str], int] = {}
        self._dirty = False
        self._beats = 0
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
               listing: bool = False) -> Any:
        key = (pull_request_id, username)
        keys = [self._mine, self._users_prefix + str(pull_request_id)]
        args = [f"{pull_request_id}|{username}", username, delta, 1 if listing else 0]
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
                reply = pipeline("EVAL", _CHANGE, 2, *keys, *args)
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
        total, *names = self._apply(pull_request_id, username, 1, listing=True)
        return int(total) == 1, sorted(_text(name) for name in names)

    def remove(self, pull_request_id: int, username: str) -> bool:
        """Count one socket fewer; True if the user has no socket left in the room."""
        return int(self._apply(pull_request_id, username, -1)) <= 0

    def count_connection(self, identity: str, delta: int) -> int:
        """Count one connection of ``identity`` more (1) or fewer (-1) on this process;
        return its connections on every live process.

        Kept as the members of the pseudo-room :data:`CONNECTIONS`, so a dead process's
        connections are reaped, and a stalled one's rewritten, exactly as its rooms are.
        """
        return int(self._apply(CONNECTIONS, identity, delta))

    def members(self, pull_request_id: int) -> List[str]:
        """The room's users on every live process, sorted."""
        key = self._users_prefix + str(pull_request_id)
        names: Any = (self.redis.hkeys(key) if self._pipeline is None
                      else self._pipeline("HKEYS", key).wait())
        return sorted(_text(name) for name in names)

    def healthy(self) -> bool:
        """Whether the last heartbeat reached Redis."""
        return self._healthy

    def start(self, spawn: Callable, sleep: Callable,
              announce_left: Callable[[List[Left]], None]) -> None:
        """Heartbeat and reap dead processes every third of the TTL, forever."""
        spawn(self._run, sleep, announce_left)

    def _run(self, sleep: Callable, announce_left: Callable[[List[Left]], None]) -> None:
        while True:
            try:
                self.heartbeat()
                gone = self.reap_dead()
                if gone:
                    announce_left(gone)
                if not self._healthy:
                    logger.warning("presence: Redis reachable again")
                self._healthy = True
            except Exception as exc:  # Redis away: keep serving, retry next beat
                if self._healthy:
                    logger.error("presence: Redis unreachable (%s); retrying", exc)
                self._healthy = False
            sleep(self.ttl / 3)

    def heartbeat(self) -> None:
        """Tell the cluster this process is alive for another TTL; repair after outages."""
        alive = f"{self._prefix}alive:{self.server_id}"
        pipe = self.redis.pipeline()
        pipe.exists(alive)
        pipe.set(alive, 1, px=int(self.ttl * 1000))
        pipe.sadd(self._prefix + "servers", self.server_id)
        was_alive = pipe.execute()[0]
        self._beats += 1
        # Our alive key vanished between beats: Redis restarted empty, or we stalled past
        # the TTL and were reaped.  Or updates failed while it was unreachable.
        if self._dirty or (self._beats > 1 and not was_alive):
            self._rewrite()

    def _rewrite(self) -> None:
        """Replace this server's share in Redis with what it really has (``_local``)."""
        reply: Optional[Reply] = None
        with self._lock:
            args: list = [self._users_prefix]
            for (pull_request_id, username), count in self._local.items():
                args += [f"{pull_request_id}|{username}", username, count]
            if self._pipeline is None:
                self._resync(keys=[self._mine], args=args)
            else:  # behind every update queued before it, ahead of every later one
                reply = self._pipeline("EVAL", _RESYNC, 1, self._mine, *args)
            self._dirty = False
            rewritten = len(self._local)
        if reply is not None:
            try:
                reply.wait()
            except Exception:
                self._dirty = True
                raise
        logger.warning("presence: rewrote this server's %d memberships into Redis", rewritten)

    def reap_dead(self) -> List[Left]:
        """Forget processes whose heartbeat expired; return the users who left with them."""
        gone: List[Left] = []
        for raw in self.redis.smembers(self._prefix + "servers"):
            server_id = _text(raw)
            if server_id == self.server_id or \
                    self.redis.exists(f"{self._prefix}alive:{server_id}"):
                continue
            # one survivor reaps; the lock outlives the reap so nobody repeats it
            if not self.redis.set(f"{self._prefix}reaping:{server_id}", self.server_id,
                                  nx=True, px=int(self.ttl * 1000)):
                continue
            fields = self._reap(keys=[f"{self._prefix}server:{server_id}"],
                                args=[self._users_prefix])
            self.redis.srem(self._prefix + "servers", server_id)
            logger.warning("presence: reaped server %s (no heartbeat for %.0f s), %d users "
                           "left", server_id, self.ttl, len(fields))
            for field in fields:
                pr, _, user = _text(field).partition("|")
                gone.append((int(pr), user))
        return gone

    def forget_self(self) -> None:
        """On graceful shutdown, after every local socket has left: drop our keys."""
        pipe = self.redis.pipeline()
        pipe.delete(f"{self._prefix}alive:{self.server_id}", self._mine)
        pipe.srem(self._prefix + "servers", self.server_id)
        pipe.execute()


def create_presence(message_queue: Optional[str], channel: str, ttl: float) -> Presence:
    """The presence backend for the configured deployment."""
    if message_queue:
        return RedisPresence(message_queue, channel, ttl)
    return MemoryPresence()
