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
