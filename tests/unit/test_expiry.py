"""The expiry heap: due keys come out once, in deadline order; closed ones never do."""
from prroom.core.expiry import ExpiryQueue


def test_due_keys_come_out_once_in_order_and_discarded_ones_never():
    queue = ExpiryQueue()
    queue.add("b", 20.0)
    queue.add("a", 10.0)
    queue.add("c", 30.0)
    queue.discard("b")
    assert queue.due(5.0) == []
    assert queue.due(25.0) == ["a"]
    assert queue.due(25.0) == []
    queue.add("c", 40.0)  # a later deadline replaces the earlier one
    assert queue.due(35.0) == []
    assert queue.due(40.0) == ["c"]
    assert len(queue) == 0


def test_stale_entries_of_closed_connections_do_not_accumulate():
    queue = ExpiryQueue()
    for n in range(10_000):  # connections that come and go before they expire
        queue.add(str(n), 1e12 + n)
        queue.discard(str(n))
    queue.add("live", 1e12)
    assert len(queue._heap) <= 130
    assert queue.due(2e12) == ["live"]
