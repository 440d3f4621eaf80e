"""The worker's request headers, read back from the WSGI environ for gunicorn's access log."""
from prroom.internals.gunicorn_worker import RequestHeaders


def test_request_headers_come_back_from_the_environ_as_gunicorn_reads_them():
    headers = RequestHeaders({"HTTP_USER_AGENT": "node", "HTTP_X_REQUEST_ID": "abc",
                              "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": "",
                              "PATH_INFO": "/socket.io/", "wsgi.input": object()})
    assert sorted(headers.items()) == [("Content-Type", "application/json"),
                                       ("User-Agent", "node"), ("X-Request-Id", "abc")]
    assert headers.get("x-request-id") == "abc"
    assert headers.get("Upgrade", "none") == "none"
