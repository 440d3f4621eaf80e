"""Prometheus metrics (official ``prometheus-client``), one registry per prroom instance.

What the event path counts (events by outcome, their handling times, messages, deliveries)
it counts in plain numbers; they are added to prometheus-client's counters and histogram
when the metrics are collected (a scrape, :meth:`Metrics.render`): prometheus-client's own
``inc`` and ``observe`` take a lock and several calls each, paid four times per message.
That needs gevent's single thread (increments from several OS threads could be lost between
two scrapes) and the ``batched-metrics`` seam; otherwise every event updates them at once.
Everything that describes state — sockets, rooms, members per room, the message queue — is
computed only when Prometheus scrapes.
"""
from __future__ import annotations

from bisect import bisect_left
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from prroom.internals import metric_locks, seams
from prroom.transport import idle

MEMBER_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
BLOCKED_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SECONDS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 1.0)


class Metrics:
    """The metrics of one prroom: call the ``record_*`` methods; :meth:`render` to scrape."""

    def __init__(self) -> None:
        # before the values are made; without gevent's patched threading there is nothing to do
        batched = False
        if metric_locks.applies():
            seams.apply("native-metric-locks", metric_locks.use_native_locks)
            probe = metric_locks.histogram_probe()
            batched = seams.apply("batched-metrics",
                                  lambda: metric_locks.can_add_observations(probe),
                                  objects=(probe,)).status == seams.INSTALLED
        else:
            seams.off("native-metric-locks", "threading is not patched by gevent")
            seams.off("batched-metrics", "threading is not patched by gevent")
        self.registry = CollectorRegistry(auto_describe=True)
        # first in the registry: every collection sees what was counted since the last one
        self.registry.register(_Flush(self.flush))
        self._events = Counter("prroom_events", "Client events received, by event and "
                               "outcome (ok or the error code)", ["event", "outcome"],
                               registry=self.registry)
        self._errors = Counter("prroom_errors", "Refused requests by error code", ["code"],
                               registry=self.registry)
        self._rate_limited = Counter("prroom_rate_limit_hits", "Events refused by a rate "
                                     "limit, by bucket", ["kind"], registry=self.registry)
        self._connections = Counter("prroom_connections", "Connection attempts by outcome "
                                    "(accepted or the refusal code)", ["outcome"],
                                    registry=self.registry)
        self._messages = Counter("prroom_messages", "Chat messages accepted (socket and "
                                 "posted)", registry=self.registry)
        self._delivered = Counter("prroom_messages_delivered", "pr-room-message deliveries "
                                  "to sockets of this process", registry=self.registry)
        self._seconds = Histogram("prroom_event_seconds", "Time to handle a client event",
                                  ["event"], buckets=SECONDS_BUCKETS, registry=self.registry)
        self._blocked = Histogram("prroom_event_loop_blocked_seconds", "Times the event "
                                  "loop was held past PRROOM_BLOCKING_THRESHOLD, by how long "
                                  "(every connection of the process waited)",
                                  buckets=BLOCKED_BUCKETS, registry=self.registry)
        self._children: Dict[Tuple[str, str], Tuple[Any, ...]] = {}
        # outcome -> its prroom_connections child: labels() takes a lock and several calls
        self._connection_children: Dict[str, Any] = {}
        #: counted since the last collection, when batched (None: updated at once)
        self._counted: Optional[Dict[Tuple[str, str], _Counted]] = {} if batched else None
        self._bounds = SECONDS_BUCKETS + (float("inf"),)
        self._new_messages = self._new_deliveries = 0

    def record_event(self, event: str, outcome: str, seconds: float) -> None:
        """One client event handled with ``outcome`` (``ok`` or an error code)."""
        counted = self._counted
        if counted is not None:
            tally = counted.get((event, outcome))
            if tally is None:
                self._children_of(event, outcome)  # the series exist from the first event
                tally = counted[(event, outcome)] = _Counted(len(self._bounds))
            tally.events += 1
            tally.seconds += seconds
            tally.buckets[bisect_left(self._bounds, seconds)] += 1
            return
        children = self._children_of(event, outcome)
        children[0].inc()
        children[1].observe(seconds)
        if children[2] is not None:
            children[2].inc()

    def _children_of(self, event: str, outcome: str) -> Tuple[Any, ...]:
        children = self._children.get((event, outcome))
        if children is None:
            children = self._children[(event, outcome)] = (
                self._events.labels(event, outcome), self._seconds.labels(event),
                self._errors.labels(outcome) if outcome != "ok" else None)
        return children

    def flush(self) -> None:
        """Add what was counted since the last collection to the metrics."""
        if self._counted is None:
            return
        for (event, outcome), tally in self._counted.items():
            if not tally.events:
                continue
            events, seconds, buckets = tally.events, tally.seconds, tally.buckets
            tally.reset()
            children = self._children_of(event, outcome)
            children[0].inc(events)
            metric_locks.add_observations(children[1], buckets, seconds)
            if children[2] is not None:
                children[2].inc(events)
        messages, self._new_messages = self._new_messages, 0
        deliveries, self._new_deliveries = self._new_deliveries, 0
        if messages:
            self._messages.inc(messages)
        if deliveries:
            self._delivered.inc(deliveries)

    def record_rate_limited(self, kind: str) -> None:
        """An event refused by the ``kind`` bucket."""
        self._rate_limited.labels(kind).inc()

    def record_connection(self, outcome: str) -> None:
        """A connection accepted (``accepted``) or refused (its error code)."""
        child = self._connection_children.get(outcome)
        if child is None:
            child = self._connection_children[outcome] = self._connections.labels(outcome)
        child.inc()

    def record_message(self) -> None:
        """A chat message accepted for broadcast."""
        if self._counted is not None:
            self._new_messages += 1
        else:
            self._messages.inc()

    def record_deliveries(self, count: int) -> None:
        """``count`` sockets of this process were sent a ``pr-room-message``."""
        if self._counted is not None:
            self._new_deliveries += count
        else:
            self._delivered.inc(count)

    def record_loop_block(self, seconds: float) -> None:
        """The event loop was held for ``seconds`` (past the threshold)."""
        self._blocked.observe(seconds)

    def watch_loop(self, lag: Callable[[], float], worst: Callable[[], float]) -> None:
        """Register the scrape-time event-loop gauges (last lag, worst of the last minute)."""
        self.registry.register(_LoopCollector(lag, worst))

    def watch_state(self, sockets: Callable[[], int], room_sizes: Callable[[], List[Any]],
                    queue_up: Callable[[], object]) -> None:
        """Register the scrape-time gauges; ``queue_up`` returns None when not clustered."""
        self.registry.register(_StateCollector(sockets, room_sizes, queue_up))

    def watch_recovery(self, sessions: Callable[[], int], packets: Callable[[], int]) -> None:
        """Register the scrape-time recovery gauges (stored sessions, buffered packets)."""
        self.registry.register(_RecoveryCollector(sessions, packets))

    def watch_seams(self, outcomes: Callable[[], List[Any]]) -> None:
        """Register the scrape-time seam gauge: one series per seam, 1 for its status."""
        self.registry.register(_SeamCollector(outcomes))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _Counted:
    """One (event, outcome)'s events since the last collection: how many, their handling
    seconds in total and per histogram bucket."""

    __slots__ = ("events", "seconds", "buckets")

    def __init__(self, buckets: int) -> None:
        self.events = 0
        self.seconds = 0.0
        self.buckets = [0] * buckets

    def reset(self) -> None:
        self.events = 0
        self.seconds = 0.0
        self.buckets = [0] * len(self.buckets)


class _Flush:
    """Collects nothing: brings the counted events into the metrics before the others are
    collected."""

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush

    def describe(self) -> List[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        self._flush()
        return iter(())


class _StateCollector:
    def __init__(self, sockets: Callable[[], int], room_sizes: Callable[[], List[Any]],
                 queue_up: Callable[[], object]) -> None:
        self._sockets, self._room_sizes, self._queue_up = sockets, room_sizes, queue_up

    def describe(self) -> List[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        yield GaugeMetricFamily("prroom_connected_sockets",
                                "Sockets connected to this process", value=self._sockets())
        sizes = self._room_sizes()
        yield GaugeMetricFamily("prroom_rooms", "Rooms with members on this process",
                                value=len(sizes))
        buckets = []
        for bound in MEMBER_BUCKETS:
            label: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
            buckets.append((label, sum(1 for size in sizes if size <= bound)))
        buckets.append(("+Inf", len(sizes)))
        total = sum(sizes)
        yield HistogramMetricFamily("prroom_room_members", "Members per room on this "
                                    "process (sockets)", buckets=buckets, sum_value=total)
        yield GaugeMetricFamily("prroom_loop_held_connections", "WebSocket connections of "
                                "this process that are silent and held by their socket's "
                                "event-loop watcher, with no greenlet of their own",
                                value=idle.held())
        up = self._queue_up()
        if up is not None:
            yield GaugeMetricFamily("prroom_message_queue_up", "1 when the message queue "
                                    "is reachable (clustered mode)", value=1 if up else 0)


class _SeamCollector:
    def __init__(self, outcomes: Callable[[], List[Any]]) -> None:
        self._outcomes = outcomes

    def describe(self) -> List[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        family = GaugeMetricFamily("prroom_seam_status", "1 for each library seam's status "
                                   "at start (installed, fell back, off, missing (accepted))",
                                   labels=["seam", "kind", "status"])
        for outcome in self._outcomes():
            family.add_metric([outcome.seam.name, outcome.seam.kind, outcome.status], 1)
        yield family


class _LoopCollector:
    def __init__(self, lag: Callable[[], float], worst: Callable[[], float]) -> None:
        self._lag, self._worst = lag, worst

    def describe(self) -> List[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        yield GaugeMetricFamily("prroom_event_loop_lag_seconds", "How late the event loop "
                                "ran a timer last time (a block shows as lag)",
                                value=self._lag())
        yield GaugeMetricFamily("prroom_event_loop_worst_lag_seconds", "The longest event "
                                "loop block of the last minute", value=self._worst())


class _RecoveryCollector:
    def __init__(self, sessions: Callable[[], int], packets: Callable[[], int]) -> None:
        self._sessions, self._packets = sessions, packets

    def describe(self) -> List[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        yield GaugeMetricFamily("prroom_recovery_sessions", "Lost sessions this process "
                                "keeps for connection state recovery (clustered: stored in "
                                "Redis by it, until they expire or are displaced)",
                                value=self._sessions())
        yield GaugeMetricFamily("prroom_recovery_buffered_packets", "Room packets kept for "
                                "returning sessions in this process's memory (clustered: 0, "
                                "they are in Redis)", value=self._packets())
