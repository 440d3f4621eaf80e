"""The one reach into gevent's pywsgi that lets a refusal skip an unread request body."""
import inspect

from gevent import pywsgi

from prroom.internals.http_bodies import leave_body_unread


def test_pywsgi_still_discards_the_unread_body_through_its_input_s_discard():
    # if this changes, leave_body_unread no longer stops the read: find the new place
    assert "self.wsgi_input._discard()" in inspect.getsource(
        pywsgi.WSGIHandler.handle_one_response)
    discard = inspect.getsource(pywsgi.Input._discard)
    assert "self.position < (self.content_length or 0) or self.chunked_input" in discard


def test_a_refused_body_is_not_read_after_the_response():
    class Socket:
        reads = 0

        def read(self, *args):
            return self.recv()

        def readline(self, *args):
            return self.recv()

        def recv(self, *args):
            Socket.reads += 1
            return b"x" * 16

    for chunked in (False, True):
        stream = pywsgi.Input(Socket(), content_length=None if chunked else 10 ** 9,
                              chunked_input=chunked)
        assert leave_body_unread({"wsgi.input": stream}) is True
        stream._discard()
    assert Socket.reads == 0
    assert leave_body_unread({}) is False
