"""Configuration (SPEC 4): defaults, keyword options, app.config precedence, checks, the URL prefix."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, url_for

from flask_sse_stream import SSE, make_sse
from flask_sse_stream.testing import open_stream

#: SPEC 4, written out here independently of the package's own table.
SPEC_DEFAULTS: dict[str, Any] = {
    "SSE_URL_PREFIX": "/stream",
    "SSE_REDIS_URL": None,
    "SSE_KEEPALIVE": 15,
    "SSE_RETRY": None,
    "SSE_MAX_HISTORY": 1000,
    "SSE_HISTORY_TTL": None,
    "SSE_QUEUE_SIZE": 1024,
    "SSE_MAX_CONNECTIONS": 10000,
    "SSE_CORS_ORIGINS": None,
    "SSE_RESET_EVENT": "sse-reset",
    "SSE_REDIS_PREFIX": "sse",
}

#: A valid non-default value for each key that the in-process store can take.
OTHER_VALUES: dict[str, Any] = {
    "SSE_URL_PREFIX": "/events",
    "SSE_KEEPALIVE": 5,
    "SSE_RETRY": 3000,
    "SSE_MAX_HISTORY": 10,
    "SSE_HISTORY_TTL": 60,
    "SSE_QUEUE_SIZE": 16,
    "SSE_MAX_CONNECTIONS": 50,
    "SSE_CORS_ORIGINS": "*",
    "SSE_RESET_EVENT": "reload",
    "SSE_REDIS_PREFIX": "myapp",
}


def option(key: str) -> str:
    return key.removeprefix("SSE_").lower()


def first_chunk(app: Flask, path: str) -> tuple[int, str, bytes]:
    """Status, Content-Type and the first write of a GET to ``path``, then close it."""
    response = app.test_client().get(path, buffered=False)
    try:
        chunk = next(iter(response.response)) if response.status_code == 200 else response.get_data()
        return response.status_code, response.headers.get("Content-Type", ""), chunk
    finally:
        response.close()


def test_init_app_puts_every_key_with_its_default_in_app_config() -> None:
    app = Flask(__name__)
    SSE().init_app(app)
    assert {key: app.config[key] for key in SPEC_DEFAULTS} == SPEC_DEFAULTS


def test_make_sse_uses_the_defaults() -> None:
    a_sse = make_sse()
    assert a_sse.send_new_event(data="x", id=True) == 1
    assert list(a_sse.messages) == [1]


def test_keyword_options_replace_the_defaults() -> None:
    app = Flask(__name__)
    SSE(app, **{option(key): value for key, value in OTHER_VALUES.items()})
    assert {key: app.config[key] for key in OTHER_VALUES} == OTHER_VALUES
    assert app.config["SSE_REDIS_URL"] is None


def test_keyword_options_of_an_sse_apply_to_each_app_it_is_given() -> None:
    sse = SSE(keepalive=7, max_history=3)
    first, second = Flask("first"), Flask("second")
    sse.init_app(first)
    sse.init_app(second)
    for app in (first, second):
        assert (app.config["SSE_KEEPALIVE"], app.config["SSE_MAX_HISTORY"]) == (7, 3)


def test_app_config_wins_over_a_keyword_option() -> None:
    app = Flask(__name__)
    app.config.update(SSE_KEEPALIVE=2, SSE_URL_PREFIX="/from-config", SSE_MAX_HISTORY=0)
    SSE(app, keepalive=30, url_prefix="/from-option", max_history=5)
    assert app.config["SSE_KEEPALIVE"] == 2
    assert app.config["SSE_URL_PREFIX"] == "/from-config"
    assert app.config["SSE_MAX_HISTORY"] == 0
    assert first_chunk(app, "/from-config")[0] == 200
    assert first_chunk(app, "/from-option")[0] == 404


def test_app_config_none_wins_over_a_keyword_option() -> None:
    app = Flask(__name__)
    app.config["SSE_RETRY"] = None
    SSE(app, retry=5000)
    assert app.config["SSE_RETRY"] is None
    assert b"retry:" not in first_chunk(app, "/stream")[2]


def test_retry_option_is_sent_at_the_start_of_each_stream() -> None:
    app = Flask(__name__)
    SSE(app, retry=2500)
    assert b"\nretry: 2500\n" in first_chunk(app, "/stream")[2]


@pytest.mark.parametrize("make", [SSE, make_sse], ids=["SSE", "make_sse"])
def test_unknown_option_is_a_type_error_naming_it_and_listing_the_options(make: Any) -> None:
    with pytest.raises(TypeError) as caught:
        make(keep_alive=5)
    message = str(caught.value)
    assert "'keep_alive'" in message
    for name in SPEC_DEFAULTS:
        assert option(name) in message


def test_option_given_with_its_config_key_name_is_unknown() -> None:
    with pytest.raises(TypeError, match="SSE_KEEPALIVE"):
        SSE(SSE_KEEPALIVE=5)


INVALID = [
    ("SSE_KEEPALIVE", 0, "0"),
    ("SSE_KEEPALIVE", -1, "-1"),
    ("SSE_KEEPALIVE", "x", "'x'"),
    ("SSE_KEEPALIVE", True, "True"),
    ("SSE_MAX_HISTORY", -1, "-1"),
    ("SSE_MAX_HISTORY", 1.5, "1.5"),
    ("SSE_QUEUE_SIZE", 0, "0"),
    ("SSE_MAX_CONNECTIONS", 0, "0"),
    ("SSE_CORS_ORIGINS", "http://a", "'http://a'"),
    ("SSE_CORS_ORIGINS", ["http://a/"], "'http://a/'"),
    ("SSE_CORS_ORIGINS", ["example.com"], "'example.com'"),
    # Never equal to a browser's Origin header: an error, not an origin that silently never matches.
    ("SSE_CORS_ORIGINS", ["https://a.example/app"], "'https://a.example/app'"),
    ("SSE_CORS_ORIGINS", ["https://a.example?x=1"], "'https://a.example?x=1'"),
    ("SSE_CORS_ORIGINS", ["https://a.example#top"], "'https://a.example#top'"),
    ("SSE_CORS_ORIGINS", ["https://App.example"], "'https://App.example'"),
    ("SSE_CORS_ORIGINS", ["HTTPS://a.example"], "'HTTPS://a.example'"),
    ("SSE_CORS_ORIGINS", ["https://a.example:443"], "'https://a.example:443'"),
    ("SSE_CORS_ORIGINS", ["http://a.example:80"], "'http://a.example:80'"),
    ("SSE_CORS_ORIGINS", ["https://user@a.example"], "'https://user@a.example'"),
    ("SSE_CORS_ORIGINS", ["https://"], "'https://'"),
    ("SSE_CORS_ORIGINS", [" https://a.example"], "' https://a.example'"),
    ("SSE_URL_PREFIX", "stream", "'stream'"),
    ("SSE_URL_PREFIX", None, "None"),
    ("SSE_REDIS_URL", "http://x", "'http://x'"),
    ("SSE_RESET_EVENT", "a\nb", repr("a\nb")),
    ("SSE_RESET_EVENT", "", "''"),
    ("SSE_RETRY", 0, "0"),
    ("SSE_RETRY", True, "True"),
    ("SSE_RETRY", "3000", "'3000'"),
    ("SSE_HISTORY_TTL", 0, "0"),
    ("SSE_HISTORY_TTL", -5, "-5"),
    ("SSE_REDIS_PREFIX", "", "''"),
]


@pytest.mark.parametrize(("key", "value", "shown"), INVALID, ids=repr)
def test_invalid_config_value_is_rejected_naming_key_and_value(key: str, value: Any, shown: str) -> None:
    app = Flask(__name__)
    app.config[key] = value
    sse = SSE()
    with pytest.raises((ValueError, TypeError)) as caught:
        sse.init_app(app)
    assert key in str(caught.value)
    assert shown in str(caught.value)
    assert "sse" not in app.extensions


@pytest.mark.parametrize(("key", "value", "shown"), INVALID, ids=repr)
def test_invalid_keyword_option_is_rejected_naming_key_and_value(key: str, value: Any, shown: str) -> None:
    app = Flask(__name__)
    with pytest.raises((ValueError, TypeError)) as caught:
        SSE(app, **{option(key): value})
    assert key in str(caught.value)
    assert shown in str(caught.value)


def test_config_error_says_what_is_accepted() -> None:
    app = Flask(__name__)
    app.config["SSE_QUEUE_SIZE"] = 0
    with pytest.raises(ValueError, match="at least 1"):
        SSE(app)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "*",
        ["https://a.example", "http://b.example:8080"],
        ("https://a.example",),
        ["http://[::1]:8080", "http://127.0.0.1:5000", "chrome-extension://abcdefghijklmnop"],
        ["https://xn--bcher-kva.example"],
    ],
)
def test_valid_cors_origins_are_accepted(value: Any) -> None:
    app = Flask(__name__)
    SSE(app, cors_origins=value)
    assert app.config["SSE_CORS_ORIGINS"] == value


@pytest.mark.parametrize(
    ("prefix", "path"),
    [("/events", "/events"), ("/", "/"), ("/api/v1/sse", "/api/v1/sse"), ("/events/", "/events")],
)
def test_url_prefix_moves_the_stream_endpoint(prefix: str, path: str) -> None:
    app = Flask(__name__)
    sse = SSE(app, url_prefix=prefix)
    status, content_type, chunk = first_chunk(app, path)
    assert status == 200
    assert content_type == "text/event-stream; charset=utf-8"
    assert chunk.startswith(b":")
    if path != "/":
        assert first_chunk(app, "/stream")[0] == 404
    assert sse.connections == []  # the stream closed with the response


@pytest.mark.parametrize(("prefix", "used"), [("/events/", "/events"), ("/", "/"), ("/a/b//", "/a/b")])
def test_init_app_writes_the_url_prefix_it_uses(prefix: str, used: str) -> None:
    app = Flask(__name__)
    app.config["SSE_URL_PREFIX"] = prefix
    SSE(app)
    assert app.config["SSE_URL_PREFIX"] == used
    with app.test_request_context():
        assert url_for("sse.stream") == used


def test_url_prefix_stream_takes_its_channel_parameter() -> None:
    app = Flask(__name__)
    sse = SSE(app, url_prefix="/")
    with open_stream(app.test_client(), "room") as stream:
        assert [c.channels for c in sse.connections] == [("room",)]
        sse.send_new_event(data="hi", channel="room")
        assert stream.next_event().data == "hi"


def test_config_is_read_once_at_init_app() -> None:
    app = Flask(__name__)
    SSE(app)
    app.config["SSE_URL_PREFIX"] = "/later"
    assert first_chunk(app, "/stream")[0] == 200
    assert first_chunk(app, "/later")[0] == 404
