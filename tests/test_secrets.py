"""No Redis password in any log line, answer or error, whatever the form of ``SSE_REDIS_URL``.

redis-py takes a password in the user-info part (``redis://:pw@host``) or as a
``password=`` parameter (the usual form for ``unix://`` sockets). Each path
that names the URL is tested with both, against a real redis-server that
requires that password: a stream ended at once because Redis is down, the
publish and stats endpoints' 503, ``send_new_event``'s error, the ``flask
sse`` commands, the listener's log lines, and the error of a rejected URL.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flask_sse_stream import SSE
from flask_sse_stream.core import core_of
from flask_sse_stream.redact import redact_url
from tests.support.redis_server import RedisServer
from tests.support.servers import PYTHON, ROOT
from tests.support.waiting import wait_until
from tests.test_publish import call

PASSWORD = "pw-Secret-4242"
TOKEN = "secrets-test-token-0123456789"


@dataclass
class SecuredRedis:
    server: RedisServer
    url: str
    #: What messages show instead of ``url``.
    shown: str


@pytest.fixture(params=["user-info", "password-parameter"])
def secured(request: pytest.FixtureRequest) -> Iterator[SecuredRedis]:
    """A redis-server that requires PASSWORD, and a URL of it with the password in one form or the other."""
    # A Unix socket's path is limited to about 100 bytes: pytest's tmp_path may be longer.
    directory = Path(tempfile.mkdtemp(prefix="sse-secrets-"))
    sock = directory / "redis.sock"
    server = RedisServer(directory, extra_args=["--requirepass", PASSWORD, "--unixsocket", str(sock)])
    if request.param == "user-info":
        url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
        shown = f"redis://:***@127.0.0.1:{server.port}/0"
    else:
        url = f"unix://{sock}?password={PASSWORD}&db=0"
        shown = f"unix://{sock}?password=***&db=0"
    try:
        yield SecuredRedis(server, url, shown)
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def closing() -> Iterator[list[SSE]]:
    made: list[SSE] = []
    yield made
    for sse in made:
        sse.close()


def secured_app(make_app, secured: SecuredRedis, closing: list[SSE], **config: object):
    app, sse = make_app(SSE_REDIS_URL=secured.url, SSE_KEEPALIVE=0.2, **config)
    closing.append(sse)
    return app, sse


def no_password(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text


# -- the redactor itself -----------------------------------------------------------------


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("rediss://user:pw@host/0", "rediss://user:***@host/0"),
        ("redis://user:p%40ss@host", "redis://user:***@host"),
        ("redis://:p@ss@host", "redis://:***@host"),
        ("unix:///run/redis.sock?password=pw&db=0", "unix:///run/redis.sock?password=***&db=0"),
        ("unix:///run/redis.sock?PassWord=pw", "unix:///run/redis.sock?PassWord=***"),
        ("unix:///run/redis.sock?pass%77ord=pw", "unix:///run/redis.sock?pass%77ord=***"),
        ("unix://:pw@/run/redis.sock", "unix://:***@/run/redis.sock"),
        ("redis://host/0?ssl_password=pw", "redis://host/0?ssl_password=***"),
        ("redis://host/0#password=pw", "redis://host/0#password=***"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
        ("redis://user@host", "redis://user@host"),
        ("redis://host/0?client_name=a+b%20c&db=1", "redis://host/0?client_name=a+b%20c&db=1"),
        # A password with an unencoded "#", "?" or "/": all up to the last "@" is hidden.
        ("redis://:1#hunter2@10.0.0.5:6379/0", "redis://***@10.0.0.5:6379/0"),
        ("redis://:1?hunter2@10.0.0.5:6379/0", "redis://***@10.0.0.5:6379/0"),
        ("redis://:1/hunter2@10.0.0.5:6379/0", "redis://***@10.0.0.5:6379/0"),
        ("rediss://user:a#b?c/d@host/0", "rediss://***@host/0"),
        ("redis://us#er@host", "redis://***@host"),
        ("unix://:pw#x@/run/redis.sock?db=0", "unix://***@/run/redis.sock?db=0"),
        ("redis://host/0?client_name=a@hunter2", "redis://***@hunter2"),
    ],
)
def test_the_url_keeps_everything_but_its_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "redis:/:pw@host",  # one slash: no host part, the user-info lands in the path
        "redis:pw@host",
        ":pw@localhost:6379",
        "redis//:pw@host",
        "redis://[::1:pw@host",  # not a URL at all
        "redis://:p\tw@host",  # read as another URL than the one written
    ],
)
def test_what_cannot_be_read_as_a_url_with_a_host_is_hidden_whole(url: str) -> None:
    assert redact_url(url) == "***"


# -- the paths that name the URL ---------------------------------------------------------


def test_a_stream_ended_because_redis_is_down_logs_the_url_without_its_password(
    make_app, serve, client_for, secured, closing, caplog
) -> None:
    app, _ = secured_app(make_app, secured, closing)
    server = serve(app)
    secured.server.stop()
    client = client_for(server.port)
    assert client.status == 200
    client.body()  # it ends at once
    assert "ended a new stream at once" in caplog.text
    assert secured.shown in caplog.text
    no_password(caplog.text)


def test_publish_and_stats_answer_503_without_the_password(make_app, serve, secured, closing, caplog) -> None:
    app, _ = secured_app(make_app, secured, closing, SSE_PUBLISH_TOKEN=TOKEN)
    port = serve(app).port
    secured.server.stop()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    published = call(port, body={"data": "x", "id": True}, headers=auth)
    stats = call(port, "/stream/stats", headers=auth, method="GET")
    assert (published.status, stats.status) == (503, 503)
    port_text = str(secured.server.port)
    for answer in (published, stats):
        # A token holder learns a short reason; the operator the detail, in the log.
        assert answer.json()["error"] == "the event store (Redis) is unavailable; try again later"
        no_password(answer.raw.decode())
        assert port_text not in answer.raw.decode() and "127.0.0.1" not in answer.raw.decode()
        assert "redis.sock" not in answer.raw.decode()
    assert "could not publish an event" in caplog.text
    assert "could not read the stats" in caplog.text
    assert caplog.text.count(secured.shown) >= 2
    no_password(caplog.text)


def test_send_new_event_raises_without_the_password(make_app, secured, closing) -> None:
    _, sse = secured_app(make_app, secured, closing)
    sent = sse.send_new_event(data="works with the password", id=True)
    assert isinstance(sent, int), sent
    assert sse.messages[sent].data == "works with the password"  # stored in Redis, under the id it returned
    secured.server.stop()
    with pytest.raises(ConnectionError) as raised:
        sse.send_new_event(data="lost", id=True)
    assert secured.shown in str(raised.value)
    no_password(str(raised.value))


def test_the_listener_logs_the_url_without_its_password(make_app, serve, client_for, secured, closing, caplog) -> None:
    app, sse = secured_app(make_app, secured, closing)
    client = client_for(serve(app).port)
    sse.send_new_event(data="before", id=True)
    assert client.next_event().data == "before"
    secured.server.stop()
    wait_until(lambda: "lost the Redis subscription" in caplog.text, what="the listener to log the loss")
    secured.server.start()  # without persistence: the event is gone, which the listener tells
    wait_until(lambda: "lost data" in caplog.text, what="the listener to log the lost data")
    assert f"lost the Redis subscription at {secured.shown}" in caplog.text
    assert f"Redis at {secured.shown} lost data" in caplog.text
    no_password(caplog.text)


def test_the_listener_logs_a_resubscription_without_the_password(
    make_app, serve, client_for, secured, closing, caplog
) -> None:
    app, _ = secured_app(make_app, secured, closing)
    client = client_for(serve(app).port)
    client.next_chunk()
    secured.server.stop()
    wait_until(lambda: "lost the Redis subscription" in caplog.text, what="the listener to log the loss")
    secured.server.start()
    wait_until(lambda: "resubscribed to Redis" in caplog.text, what="the listener to resubscribe")
    assert f"resubscribed to Redis at {secured.shown}" in caplog.text
    no_password(caplog.text)


def test_the_settings_do_not_show_the_password(make_app, secured, closing) -> None:
    app, _ = secured_app(make_app, secured, closing)
    no_password(repr(core_of(app).settings))


@pytest.mark.parametrize("command", [["send", "hello", "--id"], ["stats"]])
def test_the_flask_sse_commands_print_no_password(secured, command: list[str]) -> None:
    secured.server.stop()
    base = {key: value for key, value in os.environ.items() if not key.startswith(("SSE_", "FLASK_"))}
    result = subprocess.run(
        [PYTHON, "-m", "flask", "--app", "tests.apps.cli_app", "sse", *command],
        cwd=ROOT,
        env={**base, "PYTHONPATH": str(ROOT), "SSE_REDIS_URL": secured.url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert secured.shown in result.stderr
    no_password(result.stdout, result.stderr)


@pytest.mark.parametrize(
    "url",
    [
        f"http://:{PASSWORD}@localhost:6379/0",
        f"localhost:6379?password={PASSWORD}",
        f"redis:/:{PASSWORD}@localhost:6379",
        f":{PASSWORD}@localhost:6379",
        f"redis//:{PASSWORD}@localhost",
        f"tcp://localhost:6379/0?password={PASSWORD}",
    ],
)
def test_a_rejected_redis_url_is_not_echoed_with_its_password(make_app, url: str) -> None:
    with pytest.raises(ValueError, match="SSE_REDIS_URL must be None") as raised:
        make_app(SSE_REDIS_URL=url)
    no_password(str(raised.value))


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:1#{PASSWORD}@10.0.0.5:6379/0",
        f"redis://:1?{PASSWORD}@10.0.0.5:6379/0",
        f"redis://:1/{PASSWORD}@10.0.0.5:6379/0",
        f"rediss://user:x#{PASSWORD}@10.0.0.5/0",
        f"unix://:x?{PASSWORD}@/run/redis.sock",
    ],
)
def test_a_redis_url_whose_user_info_is_split_is_rejected_naming_the_problem(make_app, url: str) -> None:
    # redis-py would read it as localhost without a password: another server than the one written.
    with pytest.raises(ValueError, match="SSE_REDIS_URL has an '@' after") as raised:
        make_app(SSE_REDIS_URL=url)
    message = str(raised.value)
    assert "%23" in message and "%3F" in message and "%2F" in message  # how to write it
    no_password(message)
    assert "hunter" not in message and ":1" not in message.split("got", 1)[1]


def test_an_encoded_password_with_those_characters_is_accepted(make_app, closing) -> None:
    app, sse = make_app(SSE_REDIS_URL="redis://:1%23pw%3Fx%2Fy@127.0.0.1:1/0")
    closing.append(sse)
    assert app.config["SSE_REDIS_URL"] == "redis://:1%23pw%3Fx%2Fy@127.0.0.1:1/0"


def test_a_cli_url_is_not_echoed_with_its_password() -> None:
    base = {key: value for key, value in os.environ.items() if not key.startswith(("SSE_", "FLASK_"))}
    result = subprocess.run(
        [PYTHON, "-m", "flask", "--app", "tests.apps.cli_app", "sse", "stats", "--token", TOKEN,
         "--url", f"http://user:{PASSWORD}@127.0.0.1:1/stream?x=1"],
        cwd=ROOT,
        env={**base, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--url must be" in result.stderr
    no_password(result.stdout, result.stderr)
