"""Redis replies parsed from raw bytes (prroom/cluster/resp.py), however the reads split them."""
from __future__ import annotations

import pytest
from redis.exceptions import MovedError, NoScriptError, ResponseError

from prroom.cluster.resp import INCOMPLETE, ProtocolError, RespReader

STREAM = (b":3\r\n+OK\r\n$-1\r\n*-1\r\n$0\r\n\r\n"
          b"*3\r\n$8\r\nsmessage\r\n$7\r\nch:pr:1\r\n$12\r\nline\r\nbreak!\r\n"
          b"*2\r\n*1\r\n:-7\r\n$2\r\nhi\r\n-ERR wrong type\r\n-NOSCRIPT No matching script\r\n"
          b"-MOVED 866 127.0.0.1:7001\r\n")
EXPECTED = [3, b"OK", None, None, b"", [b"smessage", b"ch:pr:1", b"line\r\nbreak!"],
            [[-7], b"hi"]]


def replies_of(chunks):
    reader, out = RespReader(), []
    for chunk in chunks:
        reader.feed(chunk)
        while (reply := reader.next()) is not INCOMPLETE:
            out.append(reply)
    return out


def check(replies):
    assert replies[:len(EXPECTED)] == EXPECTED
    wrong, noscript, moved = replies[len(EXPECTED):]
    assert type(wrong) is ResponseError and str(wrong) == "ERR wrong type"
    assert isinstance(noscript, NoScriptError)
    assert isinstance(moved, MovedError) and moved.slot_id == 866


def test_one_read_with_every_reply():
    check(replies_of([STREAM]))


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13])
def test_replies_split_anywhere_between_reads(size):
    check(replies_of([STREAM[n:n + size] for n in range(0, len(STREAM), size)]))


@pytest.mark.parametrize("garbage", [b"?what\r\n", b"$abc\r\n", b":1x\r\n"])
def test_bytes_that_are_not_resp_end_the_connection(garbage):
    reader = RespReader()
    reader.feed(garbage)
    with pytest.raises(ProtocolError):
        reader.next()


def drained(chunks, skip=None):
    reader, out = RespReader(skip), []
    for chunk in chunks:
        reader.feed(chunk)
        out.extend(reader.drain())
    return out


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13, len(STREAM)])
def test_drain_gives_every_reply_of_the_reads_so_far(size):
    check(drained([STREAM[n:n + size] for n in range(0, len(STREAM), size)]))


def message(kind, channel, payload):
    return b"*3\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(kind), kind, len(channel), channel, len(payload), payload)


OWN = [message(b"smessage", b"ch:pr:1", b"me:[\"pr:1\"]\nhello\r\nthere"),
       message(b"message", b"ch", b"me:{}")]
MIXED = (OWN[0] + b":1\r\n" + OWN[1] + OWN[0] + message(b"smessage", b"ch:pr:1", b"you:[1]")
         + message(b"message", b"ch", b"m") + OWN[1]
         + b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
         + message(b"smessage", b"me:", b"not me: only the payload counts") + OWN[0])


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13, len(MIXED)])
def test_a_processs_own_messages_are_skipped_however_the_reads_split_them(size):
    chunks = [MIXED[n:n + size] for n in range(0, len(MIXED), size)]
    expected = [1, [b"smessage", b"ch:pr:1", b"you:[1]"], [b"message", b"ch", b"m"],
                [b"subscribe", b"ch", 1],
                [b"smessage", b"me:", b"not me: only the payload counts"]]
    assert drained(chunks, skip=b"me:") == expected
    reader, one_by_one = RespReader(b"me:"), []
    for chunk in chunks:
        reader.feed(chunk)
        while (reply := reader.next()) is not INCOMPLETE:
            one_by_one.append(reply)
    assert one_by_one == expected
    assert len(drained(chunks)) == len(expected) + 5  # no skip: every message


def test_drain_refuses_bytes_that_are_not_resp():
    reader = RespReader(b"me:")
    reader.feed(b":1\r\n:x\r\n")
    with pytest.raises(ProtocolError):
        reader.drain()


@pytest.mark.parametrize("skip", [None, b"me:"])
def test_a_message_whose_payload_is_not_a_bulk_string_ends_the_connection(skip):
    reader = RespReader(skip)
    reader.feed(b"*3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n:5\r\n")
    with pytest.raises(ProtocolError):
        reader.drain()


def test_a_message_cut_inside_its_lengths_waits_for_the_rest():
    whole = message(b"smessage", b"ch:pr:12", b"hello")
    for cut in range(1, len(whole)):
        reader = RespReader()
        reader.feed(whole[:cut])
        assert reader.drain() == []
        reader.feed(whole[cut:])
        assert reader.drain() == [[b"smessage", b"ch:pr:12", b"hello"]]


@pytest.mark.parametrize("size", [1, 7, 64, 1000, 100_000])
def test_a_long_run_of_own_messages_is_passed_over_to_the_others_after_it(size):
    own = [message(b"smessage", b"ch:pr:%d" % n, b'me:["pr:%d"]\n2["m",{"n":%d}]' % (n, n))
           for n in range(50)]
    others = [message(b"smessage", b"ch:pr:7", b"you:[7]"), message(b"message", b"ch", b"x")]
    stream = b"".join(own[:30] + others[:1] + own[30:] + others[1:] + own[:3])
    chunks = [stream[n:n + size] for n in range(0, len(stream), size)]
    assert drained(chunks, skip=b"me:") == [[b"smessage", b"ch:pr:7", b"you:[7]"],
                                            [b"message", b"ch", b"x"]]


def test_own_payloads_holding_crlf_are_read_by_their_lengths():
    # a host's JSON module could write CRLF between tokens: such a message is not misread
    crlf = [message(b"smessage", b"ch:pr:1", b'me:["pr:1"]\r\n\r\n2["m",\r\n{"n":1}]'),
            message(b"smessage", b"ch:pr:1", b"me:x\r\n")]
    stream = crlf[0] + crlf[1] + crlf[0] + message(b"smessage", b"ch:pr:2", b"you:y") + crlf[1]
    for size in (1, 5, len(stream)):
        chunks = [stream[n:n + size] for n in range(0, len(stream), size)]
        assert drained(chunks, skip=b"me:") == [[b"smessage", b"ch:pr:2", b"you:y"]]
