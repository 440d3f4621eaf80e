"""The chat page's HTTP side (prroom/server/web.py), through Flask's test client."""
from __future__ import annotations

import configparser
import fnmatch
import html
import json
import re
from pathlib import Path

import pytest
from flask import Flask
from flask_socketio import SocketIO

from prroom import PRRoom
from prroom.core.config import (
    DEFAULT_SOCKETIO_CLIENT_INTEGRITY,
    DEFAULT_SOCKETIO_CLIENT_URL,
    ConfigError,
    Settings,
)

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "prroom" / "server"  # where the chat page's files live


def make_client(**config):
    app = Flask(__name__)
    app.config.update(PRROOM_ASYNC_MODE="threading", **config)
    ext = PRRoom(app)
    return app.test_client(), ext


def page_config(response) -> dict:
    match = re.search(r'<script id="prroom-config" type="application/json">(.*?)</script>',
                      response.get_data(as_text=True), re.S)
    assert match, response.get_data(as_text=True)
    return json.loads(match.group(1))


def script_tags(response) -> list:
    return re.findall(r"<script src=[^>]*>", response.get_data(as_text=True))


def test_chat_page_defaults_to_the_pinned_cdn_build_with_integrity():
    client, _ = make_client()
    response = client.get("/pr/123")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    tag = script_tags(response)[0]
    assert f'src="{DEFAULT_SOCKETIO_CLIENT_URL}"' in tag
    assert f'integrity="{DEFAULT_SOCKETIO_CLIENT_INTEGRITY}"' in tag
    assert 'crossorigin="anonymous"' in tag
    assert DEFAULT_SOCKETIO_CLIENT_URL == "https://cdn.socket.io/4.8.1/socket.io.min.js"
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self' https://cdn.socket.io;" in csp
    assert "object-src 'none'" in csp and "base-uri 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["Cache-Control"] == "no-store"
    assert page_config(response) == {
        "pullRequestId": 123, "embed": False, "socketPath": "/socket.io/",
        "clientUrl": DEFAULT_SOCKETIO_CLIENT_URL, "typingTimeout": 5.0,
        "limits": {"maxMessageLength": 4000, "maxUsernameLength": 64}, "identity": {}}
    body = response.get_data(as_text=True)
    assert "<title>Pull request #123 · chat</title>" in body
    assert '<html lang="en" class="standalone">' in body


@pytest.mark.parametrize("path", ["/pr/7/embed", "/pr/7?embed=1", "/pr/7?embed=true"])
def test_embed_view(path):
    client, _ = make_client()
    response = client.get(path)
    assert response.status_code == 200
    assert page_config(response)["embed"] is True
    assert 'class="embed"' in response.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/pr/7?embed=0", "/pr/7?embed=", "/pr/7?embed=false"])
def test_embed_off(path):
    client, _ = make_client()
    assert page_config(client.get(path))["embed"] is False


@pytest.mark.parametrize("path", ["/pr/0", "/pr/-1", "/pr/abc", "/pr/1.5", "/pr/",
                                  f"/pr/{2 ** 53}", "/pr/7/embed/x"])
def test_not_a_pull_request_id(path):
    client, _ = make_client()
    assert client.get(path).status_code == 404


def test_largest_pull_request_id():
    client, _ = make_client()
    assert page_config(client.get(f"/pr/{2 ** 53 - 1}"))["pullRequestId"] == 2 ** 53 - 1


def test_url_prefix_and_settings_reach_the_page():
    client, _ = make_client(PRROOM_URL_PREFIX="/chat", PRROOM_MAX_MESSAGE_LENGTH=100,
                            PRROOM_MAX_USERNAME_LENGTH=20, PRROOM_TYPING_TIMEOUT=2,
                            PRROOM_SOCKETIO_PATH="rt")
    assert client.get("/pr/5").status_code == 404
    response = client.get("/chat/pr/5")
    config = page_config(response)
    assert config["socketPath"] == "/rt/"
    assert config["limits"] == {"maxMessageLength": 100, "maxUsernameLength": 20}
    assert config["typingTimeout"] == 2.0
    body = response.get_data(as_text=True)
    assert 'href="/chat/prroom-static/chat.css?v=' in body
    assert 'src="/chat/prroom-static/chat.js?v=' in body
    assert 'maxlength="20"' in body
    assert client.get("/chat/prroom-static/chat.js").status_code == 200


def test_script_root_is_part_of_the_socket_path():
    client, _ = make_client()
    response = client.get("/pr/5", environ_overrides={"SCRIPT_NAME": "/mounted"})
    assert page_config(response)["socketPath"] == "/mounted/socket.io/"


def test_host_apps_own_socketio_path_is_used():
    app = Flask(__name__)
    socketio = SocketIO(app, async_mode="threading", path="custom-io")
    PRRoom(app, socketio=socketio)
    assert page_config(app.test_client().get("/pr/1"))["socketPath"] == "/custom-io/"


@pytest.mark.parametrize("name, mimetype", [("chat.js", "text/javascript"),
                                            ("chat.css", "text/css"),
                                            ("favicon.svg", "image/svg+xml")])
def test_static_files(name, mimetype):
    client, _ = make_client()
    response = client.get(f"/prroom-static/{name}")
    assert response.status_code == 200
    assert response.mimetype == mimetype
    assert response.data == (PACKAGE / "static" / "prroom" / name).read_bytes()


def test_local_client_file_is_served_and_used(tmp_path):
    build = tmp_path / "socket.io.min.js"
    build.write_text("/* a socket.io-client build */")
    client, ext = make_client(PRROOM_SOCKETIO_CLIENT_FILE=str(build))
    response = client.get("/pr/9")
    tag = script_tags(response)[0]
    assert 'src="/socket.io-client.min.js?v=' in tag
    assert "integrity" not in tag and "cdn.socket.io" not in response.get_data(as_text=True)
    assert response.headers["Content-Security-Policy"].startswith("script-src 'self';")
    served = client.get("/socket.io-client.min.js")
    assert served.status_code == 200
    assert served.mimetype == "text/javascript"
    assert served.data == build.read_bytes()


def test_client_file_route_is_off_by_default():
    client, _ = make_client()
    assert client.get("/socket.io-client.min.js").status_code == 404


def test_custom_client_url_without_integrity():
    client, _ = make_client(PRROOM_SOCKETIO_CLIENT_URL="/assets/sio.js",
                            PRROOM_SOCKETIO_CLIENT_INTEGRITY="")
    response = client.get("/pr/9")
    assert script_tags(response)[0] == '<script src="/assets/sio.js" defer>'
    assert response.headers["Content-Security-Policy"].startswith("script-src 'self';")


def test_protocol_relative_client_url_is_allowed_by_csp():
    client, _ = make_client(PRROOM_SOCKETIO_CLIENT_URL="//static.example/sio.js",
                            PRROOM_SOCKETIO_CLIENT_INTEGRITY="sha256-abc=")
    response = client.get("/pr/9")
    assert "script-src 'self' static.example;" in response.headers["Content-Security-Policy"]
    assert 'integrity="sha256-abc="' in script_tags(response)[0]


@pytest.mark.parametrize("key, value", [
    ("PRROOM_SOCKETIO_CLIENT_URL", "cdn.socket.io/4.8.1/socket.io.min.js"),
    ("PRROOM_SOCKETIO_CLIENT_URL", "javascript:alert(1)"),
    ("PRROOM_SOCKETIO_CLIENT_URL", ""),
    ("PRROOM_SOCKETIO_CLIENT_INTEGRITY", "md5-abc"),
    ("PRROOM_SOCKETIO_CLIENT_INTEGRITY", "sha384-not base64!"),
    ("PRROOM_SOCKETIO_CLIENT_FILE", "/nonexistent/socket.io.min.js"),
])
def test_bad_client_settings_stop_the_start(key, value):
    with pytest.raises(ConfigError, match=f"^{key}="):
        Settings.from_mapping({key: value})


def test_client_file_path_is_made_absolute(tmp_path, monkeypatch):
    (tmp_path / "sio.js").write_text("x")
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_mapping({"PRROOM_SOCKETIO_CLIENT_FILE": "sio.js"})
    assert settings.socketio_client_file == str(tmp_path / "sio.js")


def test_identity_hook_reaches_the_page():
    client, ext = make_client()

    def page_identity(request, pull_request_id):
        return {"username": "alice", "auth": {"token": f"t-{pull_request_id}</script>"}}

    ext.identity.page_identity = page_identity
    response = client.get("/pr/4")
    assert page_config(response)["identity"] == {"username": "alice",
                                                 "auth": {"token": "t-4</script>"}}
    # JSON in the page cannot close its <script> element
    assert "t-4</script>" not in response.get_data(as_text=True)


def test_authenticating_policy_tells_the_page_not_to_ask_for_a_name():
    client, ext = make_client(PRROOM_AUTH_MODE="custom",
                              PRROOM_AUTHENTICATE=lambda auth, request: "alice")
    assert page_config(client.get("/pr/4"))["identity"] == {"authenticated": True}


def test_template_has_no_unescaped_dynamic_text():
    """Everything dynamic in the template goes through autoescaping or |tojson."""
    source = (PACKAGE / "templates" / "prroom" / "chat.html").read_text()
    assert "|safe" not in source and "Markup" not in source
    client, _ = make_client()
    body = client.get("/pr/5").get_data(as_text=True)
    assert html.unescape(body).count("<script") == 3


def test_package_data_ships_every_page_file():
    """setup.cfg's package_data must cover each template and static file (the wheel)."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    section = parser["options.package_data"]["prroom.server"]
    patterns = [line.strip() for line in section.splitlines() if line.strip()]
    files = [path.relative_to(PACKAGE).as_posix()
             for folder in ("templates", "static") for path in (PACKAGE / folder).rglob("*")
             if path.is_file()]
    assert files
    missing = [name for name in files
               if not any(fnmatch.fnmatch(name, pattern) for pattern in patterns)]
    assert missing == []


# -- framing (clickjacking) ---------------------------------------------------------------

def frame_headers(response):
    csp = response.headers["Content-Security-Policy"]
    ancestors = [part.strip() for part in csp.split(";") if "frame-ancestors" in part]
    return ancestors, response.headers.get("X-Frame-Options")


def test_the_full_page_may_not_be_framed_and_the_embed_view_only_by_its_own_origin():
    client, _ = make_client()
    assert frame_headers(client.get("/pr/7")) == (["frame-ancestors 'none'"], "DENY")
    for path in ("/pr/7/embed", "/pr/7?embed=1"):
        assert frame_headers(client.get(path)) == (["frame-ancestors 'self'"], "SAMEORIGIN")


@pytest.mark.parametrize("setting,ancestors,frame_options", [
    ("'none'", "frame-ancestors 'none'", "DENY"),
    ("self", "frame-ancestors 'self'", "SAMEORIGIN"),
    # X-Frame-Options cannot name other origins: left to CSP
    ("'self' https://review.example.com, https://*.example.org:8443",
     "frame-ancestors 'self' https://review.example.com https://*.example.org:8443", None),
])
def test_embed_view_framing_follows_the_setting(setting, ancestors, frame_options):
    client, _ = make_client(PRROOM_EMBED_FRAME_ANCESTORS=setting)
    assert frame_headers(client.get("/pr/7/embed")) == ([ancestors], frame_options)
    assert frame_headers(client.get("/pr/7")) == (["frame-ancestors 'none'"], "DENY")


@pytest.mark.parametrize("value", ["https://a.example; script-src *", "'none' 'self'",
                                   "", "javascript:alert(1)", "*"])
def test_bad_frame_ancestors_stop_the_start(value):
    with pytest.raises(ConfigError, match="^PRROOM_EMBED_FRAME_ANCESTORS="):
        make_client(PRROOM_EMBED_FRAME_ANCESTORS=value)
